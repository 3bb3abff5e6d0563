"""The JSON API under ``/api``: one module per topic, each defining ``router``."""
