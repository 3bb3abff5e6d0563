"""Model versions: packages, digests, lineage, stages, and the Predictor that serving uses."""

from kiln.registry.auth import check_admin
from kiln.registry.package import LoadedPackage, environment_mismatches, load_package
from kiln.registry.predictor import Prediction, Predictor
from kiln.registry.stages import StageError, Stages, Transition, previous_production

__all__ = [
    "LoadedPackage",
    "Prediction",
    "Predictor",
    "StageError",
    "Stages",
    "Transition",
    "check_admin",
    "environment_mismatches",
    "load_package",
    "previous_production",
]
