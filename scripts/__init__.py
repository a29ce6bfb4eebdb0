"""Tools a user or a workflow runs: `python -m scripts.<name>` (deploy gate, PR report, serving benchmark, ...)."""
