"""Scaling-law experiment harness: train tiny transformers under FLOP budgets and fit scaling laws."""

__version__ = "0.1.0"
