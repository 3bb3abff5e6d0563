"""The README's pipeline is a valid kiln.yaml (the documentation cannot drift from the schema)."""

from __future__ import annotations

import re
from pathlib import Path

from kiln.config.loader import parse_config

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_pipeline_validates() -> None:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    pipelines = [b for b in blocks if b.startswith("name:")]
    assert pipelines, "the README shows no pipeline"
    for block in pipelines:
        loaded = parse_config(block, ROOT / "README.md")
        assert loaded.config.name
