"""Model versions: packages, digests, lineage, and the Predictor that serving uses."""

from kiln.registry.package import LoadedPackage, environment_mismatches, load_package
from kiln.registry.predictor import Prediction, Predictor

__all__ = ["LoadedPackage", "Prediction", "Predictor", "environment_mismatches", "load_package"]
