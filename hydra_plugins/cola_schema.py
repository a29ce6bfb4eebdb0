"""Registers the config schema (cola/config.py) in Hydra's ConfigStore when `dvc exp run -S` composes conf/.

DVC runs Hydra's plugin scan with the repo root on sys.path (hydra.plugins_path, default the root), and the scan
imports every module of the `hydra_plugins` namespace package: this one. So the schema that conf/config.yaml names
in its defaults applies at `-S` time too, and a wrongly typed value fails before any stage runs.
"""

from cola.config import register_schema

register_schema()
