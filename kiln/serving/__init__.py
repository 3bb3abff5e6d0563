"""The prediction server: routing to the production version and its canary, fallback, shadow,
capture, metrics.

``serve(settings, host=..., port=..., workers=...)`` runs it under uvicorn (``python -m
kiln.serving``); ``create_app(settings)`` is its ASGI app.
"""

from kiln.serving._app import ServingApp, create_app
from kiln.serving._launch import serve
from kiln.serving._schema import MAX_INSTANCES

__all__ = ["MAX_INSTANCES", "ServingApp", "create_app", "serve"]
