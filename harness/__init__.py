"""Scaling-law experiment harness: train tiny transformers under FLOP budgets and fit scaling laws."""

from pathlib import Path

__version__ = "0.1.0"

# The Hydra configs: harness/conf is a link to the repository's conf/, so they also travel inside a wheel.
CONF_DIR = str(Path(__file__).resolve().parent / "conf")
