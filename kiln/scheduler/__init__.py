"""The Airflow-free scheduler: every kiln.yaml under a folder, run on its cron.

`kiln scheduler --dir PIPELINES/` scans the folder on every poll (a new or changed kiln.yaml
is picked up without a restart), claims each due firing in the metadata database (so that two
schedulers never run one firing twice), runs it as a `kiln run` child process, retries a
failed run with exponential backoff, and applies the schedule's catch-up policy.
"""

from kiln.scheduler._due import Due, decide, grace_for, latest_due, next_due
from kiln.scheduler._folder import Folder, Pipeline, Scan
from kiln.scheduler._scheduler import Outcome, Scheduler, Summary
from kiln.scheduler._summary import PipelinePass

__all__ = [
    "Due",
    "Folder",
    "Outcome",
    "Pipeline",
    "PipelinePass",
    "Scan",
    "Scheduler",
    "Summary",
    "decide",
    "grace_for",
    "latest_due",
    "next_due",
]
