"""The run lifecycle: the only layer that joins the planner, the executors and the stores."""

from kiln.runs.context import Stores, open_stores
from kiln.runs.runner import Runner, RunResult, check_importable
from kiln.runs.training import TrainContext

__all__ = ["RunResult", "Runner", "Stores", "TrainContext", "check_importable", "open_stores"]
