"""Ideas side by side: `kiln compare PIPELINE A B`, and the champion/challenger table that
`kiln run --experiment` prints against production."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from kiln.cli._common import _num, _stores, out


def compare(
    ctx: typer.Context,
    pipeline: str,
    a: Annotated[str, typer.Argument(help="A version (3, v3, production) or a run (run:ID).")],
    b: Annotated[str, typer.Argument(help="The other version or run.")],
) -> None:
    """Two versions (or runs) of PIPELINE side by side: metrics per segment with the change
    from A to B, the config diff, data snapshot, code revision and environment."""
    from kiln.registry.compare import compare as compare_sides

    stores = _stores(ctx)
    try:
        c = compare_sides(stores.metadata, stores.content, pipeline, a, b)
    finally:
        stores.close()
    facts = Table("", c.a.label, c.b.label, title=f"{pipeline}: {c.a.label} vs {c.b.label}",
                  title_justify="left")  # fmt: skip
    fa, fb = c.a.facts(), c.b.facts()
    for key in fa:
        same = fa[key] == fb[key]
        facts.add_row(key, escape(fa[key]), escape(fb[key]) if not same else "[dim]same[/]")
    out.print(facts)
    t = Table("segment", title="metrics (each on its own holdout; Δ = B - A)", title_justify="left")
    for name in c.metrics:
        for col in (f"{name} {c.a.label}", f"{name} {c.b.label}", "Δ"):
            t.add_column(col, justify="right")
    for seg in c.segments():
        cells: list[str] = []
        for name in c.metrics:
            x = c.a.metrics.get(seg, {}).get(name)
            y = c.b.metrics.get(seg, {}).get(name)
            d = c.delta(seg, name)
            cells += [_num(x), _num(y), "-" if d is None else f"{d:+.4g}"]
        note = c.b.notes.get(seg) or c.a.notes.get(seg)
        t.add_row(escape(seg) + (f" [yellow]({escape(note)})[/]" if note else ""), *cells)
    out.print(t)
    diff = c.config_diff()
    if not diff:
        out.print("config: identical")
        return
    out.print("config diff:")
    for line in diff:
        style = "green" if line.startswith("+") else "red" if line.startswith("-") else ""
        out.print(Text(line, style=style), highlight=False)


def champion_table(evidence: dict[str, Any], title: str) -> Table:
    """The champion/challenger gate's evidence: per segment, both versions on the same rows."""
    metric = evidence.get("metric", "")
    t = Table("segment", "rows", "challenger", "champion", "change", "judged", title=title,
              title_justify="left")  # fmt: skip
    rows = {"(overall)": evidence.get("overall", {}), **evidence.get("segments", {})}
    for seg, r in rows.items():
        change = r.get("regression")
        text = "-" if change is None else f"{-change:+.1%}"  # positive: better
        style = (
            "red" if r.get("regressed") else "green" if change is not None and change < 0 else ""
        )
        t.add_row(
            escape(seg), str(r.get("rows", "-")), _num(r.get("candidate")), _num(r.get("champion")),
            f"[{style}]{text}[/]" if style else text, "yes" if r.get("judged") else "no",
        )  # fmt: skip
    t.caption = f"{metric} on the challenger's holdout; change: + is better"
    return t
