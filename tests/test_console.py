"""The CLI's tables, rendered from small hand-made inputs."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from kiln.console import segment_table

USAGE = {"wall_seconds": 1.5, "cpu_seconds": 2.5, "peak_memory_bytes": 100 * 2**20}


def manifest() -> dict[str, Any]:
    def ref(own: tuple[float, float, float], fb: tuple[float, float, float]) -> dict[str, Any]:
        names = ("mae", "rmse", "r2")
        return {
            "rows_train": 900, "rows_holdout": 100, "usage": USAGE,
            "metrics": dict(zip(names, own, strict=True)),
            "fallback_metrics": dict(zip(names, fb, strict=True)),
        }  # fmt: skip

    return {
        "metrics": {
            "primary": "rmse",
            "overall": {"mae": 11.5, "rmse": 21.5, "r2": 0.125},
            "fallback_only": {"mae": 12.5, "rmse": 22.5, "r2": 0.0625},
        },
        "models": {"JFK": ref((10.5, 20.5, 0.25), (13.5, 23.5, 0.375))},
        "routed_to_fallback": {
            "SFO": {
                "reason": "no training rows",
                "rows_holdout": 7,
                "fallback_metrics": {"mae": 14.5, "rmse": 24.5, "r2": -0.5},
            }
        },
        "fallback": {
            **ref((15.5, 25.5, 0.75), (15.5, 25.5, 0.75)),
            "rows_train": 2000,
        },
    }


def rendered(data: dict[str, Any]) -> list[str]:
    console = Console(width=250, record=True)
    console.print(segment_table(data, "flights v1"))
    return console.export_text().splitlines()


def test_every_configured_metric_and_the_fallbacks_on_the_same_rows() -> None:
    lines = rendered(manifest())
    header = next(line for line in lines if "segment" in line)
    assert "rmse* (fallback)" in header and "mae (fallback)" in header
    assert "r2 (fallback)" in header
    assert header.index("rmse*") < header.index("mae (") < header.index("r2 (")  # primary first
    jfk = next(line for line in lines if line.lstrip("│ ").startswith("JFK"))
    assert "20.5 (23.5)" in jfk and "10.5 (13.5)" in jfk and "0.25 (0.375)" in jfk
    sfo = next(line for line in lines if "SFO" in line)
    assert "24.5 (24.5)" in sfo and "14.5 (14.5)" in sfo and "-0.5 (-0.5)" in sfo
    text = "\n".join(lines)
    assert "routed holdout: rmse=21.5  mae=11.5  r2=0.125" in text
    assert "fallback only: rmse=22.5  mae=12.5  r2=0.0625" in text
