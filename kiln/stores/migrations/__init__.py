"""Alembic migrations of the metadata store (a package so that wheels ship env.py)."""
