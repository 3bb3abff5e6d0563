"""Executors fan Kiln's per-segment tasks out over worker processes.

One small protocol, :class:`Executor`, with two backends: a local process pool (the
default) and Ray (scale-out). Every task outcome carries its resource usage and its log.
"""

from kiln.executors._factory import make_executor
from kiln.executors._types import Executor, TaskOutcome, Usage

__all__ = ["Executor", "TaskOutcome", "Usage", "make_executor"]
