"""Typed read queries that the CLI and the UI share (the catalogue helper owns this file)."""
