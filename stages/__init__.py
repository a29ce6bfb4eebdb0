"""One module per DVC stage; each is run as `python -m stages.<name>` from the repo root and reads params.yaml."""
