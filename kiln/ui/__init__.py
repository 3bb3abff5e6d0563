"""The management UI and API (`kiln ui`): web pages and JSON over the registry, separate from the
prediction server so that it never slows predictions."""

from kiln.ui._app import create_app

__all__ = ["create_app"]
