"""`kiln init`: a commented kiln.yaml to start from, either a template (with a train.py) or
one inferred from the data (`--from FILE_OR_URL --target COL`) that validates and runs as
written."""

from __future__ import annotations

import getpass
import os
import re
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from kiln.cli._common import out
from kiln.errors import ConfigError, KilnError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def init(
    folder: Annotated[
        Path, typer.Argument(help="Where to write kiln.yaml (and train.py).")
    ] = Path(),
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Infer kiln.yaml from this data: a .csv/.parquet file, a .duckdb file or a"
            " SQLAlchemy URL (with --query).",
        ),
    ] = None,
    query: Annotated[str | None, typer.Option(help="SQL that selects the rows (--from).")] = None,
    target: Annotated[str | None, typer.Option(help="The column to predict (--from).")] = None,
    segment: Annotated[
        str | None, typer.Option(help="Train one model per value of this column (--from).")
    ] = None,
    time_column: Annotated[
        str | None,
        typer.Option(help="Split train/holdout on this timestamp (default: the only one)."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Pipeline name (default: the folder's).")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing kiln.yaml.")
    ] = False,
) -> None:
    """Scaffold a commented kiln.yaml: from a template (with a train.py), or inferred from your
    data with `--from data.csv --target COL [--segment COL]`."""
    if source is None:
        for flag, value in (("--query", query), ("--target", target), ("--segment", segment),
                            ("--time-column", time_column)):  # fmt: skip
            if value is not None:
                raise ConfigError(
                    f"{flag} goes with --from", hint="kiln init --from data.csv --target COL"
                )
        _template(folder, force=force)
        return
    if target is None:
        raise ConfigError(
            f"--target is needed with --from {source}",
            hint="name the column to predict, e.g. kiln init --from data.csv --target price",
        )
    _from_data(folder, source, query, target, segment, time_column, name, force=force)


def _refuse_existing(path: Path, *, force: bool) -> None:
    if path.exists() and not force:
        raise KilnError(f"{path} exists already", hint="pick an empty folder, or pass --force")


def _template(folder: Path, *, force: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    templates = resources.files("kiln.config") / "templates"
    for file in ("kiln.yaml", "train.py"):
        _refuse_existing(folder / file, force=force)
    for file in ("kiln.yaml", "train.py"):
        (folder / file).write_text((templates / file).read_text())
        out.print(f"wrote {folder / file}")


def _from_data(
    folder: Path,
    spec: str,
    query: str | None,
    target: str,
    segment: str | None,
    time_column: str | None,
    name: str | None,
    *,
    force: bool,
) -> None:
    from kiln.config.loader import parse_config
    from kiln.pipeline.scaffold import infer_pipeline, render_yaml
    from kiln.sources import open_source

    path = folder / "kiln.yaml"
    _refuse_existing(path, force=force)
    source = open_source(spec, base_dir=Path.cwd(), where="--from")
    if query is None and (_URL.match(spec) or spec.lower().endswith(".duckdb")):
        tables: list[str] = getattr(source, "tables", list)()
        example = tables[0] if tables else "my_table"
        raise ConfigError(
            f"--from {spec}: a database needs --query"
            + (f" (tables: {', '.join(tables)})" if tables else ""),
            hint=f'kiln init --from {spec} --query "SELECT * FROM {example}" --target COL',
        )
    df = source.read(query).to_pandas()
    inferred = infer_pipeline(
        df, target=target, segment=segment, time_column=time_column, where=f"--from {spec}"
    )
    folder.mkdir(parents=True, exist_ok=True)
    text = render_yaml(
        inferred,
        name=name or _slug(folder.resolve().name),
        owner=_owner(),
        source=_source_text(spec, folder),
        query=query,
        described=source.describe(),
    )
    parse_config(text, path)  # what is written validates as written
    path.write_text(text)
    features = ", ".join(c.name for c in inferred.features)
    split = f"time split on {inferred.time_column}" if inferred.time_column else "random split"
    seg = f", one model per {segment}" if segment else ""
    out.print(
        f"wrote {path}: {inferred.task} of {target}, {len(inferred.features)} features"
        f" ({features}), {split}{seg}"
    )
    if inferred.left_out:
        out.print("left out: " + "; ".join(f"{c.name} ({c.note})" for c in inferred.left_out))
    out.print(f"next: `kiln validate {path}` then `kiln run {path}`")


def _source_text(spec: str, folder: Path) -> str:
    """A file as seen from kiln.yaml: relative when inside its folder, else absolute."""
    if _URL.match(spec):
        return spec
    file = Path(spec).expanduser().resolve()
    base = folder.resolve()
    if file.is_relative_to(base):
        return file.relative_to(base).as_posix()
    return str(file)


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")[:63]
    return slug or "my-pipeline"


def _owner() -> str:
    for var in ("KILN_OWNER", "EMAIL"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "you@example.com"
