"""Kiln: one kiln.yaml turns into a model factory."""

__version__ = "0.1.0"
__all__ = ["__version__"]
