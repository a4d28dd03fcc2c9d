"""Synthetic datasets and training of the built-in default models (`python -m train`)."""
