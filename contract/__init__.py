"""The serving contract, shared by the pipeline (cola/, stages/) and the app (app/): the bundle format (bundle.py),
the monitoring features of a text (features.py) and the prediction log line (logs.py). One definition, so the two
sides cannot drift apart.

The app and the Lambda image import it, so it must never import torch or transformers
(tests/unit/test_contract.py checks)."""
