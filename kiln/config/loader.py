"""Load kiln.yaml and turn every problem into ``file:line:column: field: what was expected``."""

from __future__ import annotations

import difflib
import importlib
import re
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from kiln.config.models import PipelineConfig
from kiln.errors import ConfigError

__all__ = [
    "LoadedConfig",
    "import_object",
    "load_config",
    "parse_config",
    "pythonpath",
    "read_yaml",
    "validate_yaml",
]

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config plus where it came from, so later errors can point into the file."""

    config: PipelineConfig
    path: Path
    text: str
    _root: yaml.Node | None

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def where(self, *loc: str | int) -> str:
        """``path:line:column`` of the value at ``loc`` (or of its nearest parent)."""
        line, col = _locate(self._root, loc)
        return f"{self.path}:{line}:{col}"


def load_config(path: str | Path) -> LoadedConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"{p}: no such file",
            hint="pass the path of a kiln.yaml, or create one with `kiln init`",
        )
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot be read ({e})", hint="save it as UTF-8 text") from e
    return parse_config(text, p)


class _KeysAsText(yaml.SafeLoader):
    """YAML 1.1 reads the keys on, off, yes and no as booleans (``retrain: {on: [drift]}`` would
    be ``{True: [...]}``); a kiln.yaml key is a name, so a key is always its own text. Values
    keep YAML's meaning (``auto_promote: yes`` is true)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag == "tag:yaml.org,2002:bool":
                key.tag = "tag:yaml.org,2002:str"
        return super().construct_mapping(node, deep)


def parse_config(text: str, path: Path) -> LoadedConfig:
    root, data = read_yaml(text, path)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}:1:1: expected a mapping of sections (name, data, target, ...), "
            f"got {type(data).__name__}",
            hint="start from `kiln init` for a commented example",
        )
    config = validate_yaml(
        PipelineConfig, data, root, path,
        what="the pipeline config",
        hint="`kiln schema` prints the JSON Schema of kiln.yaml for editor completion",
    )  # fmt: skip
    return LoadedConfig(config=config, path=path, text=text, _root=root)


def read_yaml(text: str, path: Path) -> tuple[yaml.Node | None, Any]:
    """The YAML node tree (for line numbers) and the data of ``text``; a syntax error or a
    key given twice is a ConfigError at ``path:line:column``."""
    try:
        root = yaml.compose(text, Loader=_KeysAsText)
        data = yaml.load(text, Loader=_KeysAsText)  # a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(
            f"{where}: not valid YAML ({problem})",
            hint="check indentation and quoting around that place",
        ) from e
    _refuse_duplicate_keys(root, path)
    return root, data


def validate_yaml(
    model: type[M], data: Any, root: yaml.Node | None, path: Path, *, what: str, hint: str
) -> M:
    """``model`` validated from ``data``; every problem is one ``path:line:column: field:
    message`` line of one ConfigError."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = sorted(
            (_describe(err, root, path, model) for err in e.errors()),
            key=lambda p: [
                int(x) if x.isdigit() else 0 for x in p[len(str(path)) :].split(":")[1:3]
            ],
        )
        raise ConfigError(
            f"{path}: {len(problems)} problem(s) in {what}", problems=problems, hint=hint
        ) from None


def _refuse_duplicate_keys(root: yaml.Node | None, path: Path) -> None:
    """YAML keeps the last of two equal keys without a word; Kiln refuses them, naming both."""
    found: list[tuple[int, int, str]] = []
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")] if root is not None else []
    while stack:
        node, field = stack.pop()
        if id(node) in seen:  # an alias repeats a node already walked
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], yaml.Node] = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                    name = f"{field}.{k.value}" if field else str(k.value)
                    earlier = first.setdefault((k.tag, k.value), k)
                    if earlier is not k:
                        text = (
                            f"{path}:{_mark(earlier)} and {path}:{_mark(k)}: key {k.value!r} "
                            f"given twice in one mapping ({name})"
                        )
                        found.append((earlier.start_mark.line, earlier.start_mark.column, text))
                    stack.append((v, name))
                else:
                    stack.append((v, field))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{field}[{i}]") for i, item in enumerate(node.value))
    if not found:
        return
    texts = [text for *_, text in sorted(found)]
    hint = "keep one of them; YAML would silently use the last one"
    if len(texts) == 1:
        raise ConfigError(texts[0], hint=hint)
    raise ConfigError(f"{path}: {len(texts)} keys given twice", problems=texts, hint=hint)


def _mark(node: yaml.Node) -> str:
    return f"{node.start_mark.line + 1}:{node.start_mark.column + 1}"


_NAMED_FIELD = re.compile(r"^([a-z_]+(?:\.[a-z_]+)+): (.*)$", re.DOTALL)


def _describe(err: Any, root: yaml.Node | None, path: Path, model: type[BaseModel]) -> str:
    loc: Loc = tuple(x for x in err["loc"] if not _is_union_tag(x))
    if not loc and (named := _NAMED_FIELD.match(err["msg"].removeprefix("Value error, "))):
        # a check across sections names its field first ("evaluation.split.kind: ..."): point there
        loc = tuple(named.group(1).split("."))
        err = {k: v for k, v in err.items() if k != "input"} | {"msg": named.group(2)}
    line, col = _locate(root, loc, at_key=err["type"] == "extra_forbidden")
    field = ".".join(str(x) for x in loc) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _known_fields(loc[:-1], model)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        msg = f"unknown key {loc[-1]!r}"
        msg += f"; did you mean {close[0]!r}?" if close else f"; expected one of {sorted(known)}"
    elif kind == "missing":
        msg = "required field is missing"
    else:
        msg = err["msg"].removeprefix("Value error, ")
        if "input" in err and kind not in ("model_type",):
            msg += f" (got {_short(err['input'])})"
    return f"{path}:{line}:{col}: {field}: {msg}"


def _is_union_tag(x: str | int) -> bool:
    # pydantic adds the member type name (e.g. 'list[...]', 'literal[...]') to union locations.
    return isinstance(x, str) and ("[" in x or x in {"str", "int", "float", "bool"})


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _locate(
    root: yaml.Node | None, loc: Sequence[str | int], *, at_key: bool = False
) -> tuple[int, int]:
    node = root
    best = (1, 1) if root is None else (root.start_mark.line + 1, root.start_mark.column + 1)
    for i, key in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if k.value == str(key):
                    # an unknown key is reported at the key itself; a value at its value
                    best = (k.start_mark.line + 1, k.start_mark.column + 1)
                    nxt = v
                    break
            if nxt is None or (at_key and i == len(loc) - 1):
                return best
            node = nxt
            best = (node.start_mark.line + 1, node.start_mark.column + 1)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
            if key >= len(node.value):
                return best
            node = node.value[key]
            best = (node.start_mark.line + 1, node.start_mark.column + 1)
        else:
            return best
    return best


def _model_at(loc: Loc, root: type[BaseModel]) -> type[BaseModel] | None:
    model: Any = root
    for key in loc:
        if isinstance(key, int) or model is None:
            continue
        field = model.model_fields.get(key)
        if field is None:
            if _is_mapping_of_models(model):
                model = _inner_model(model)
                continue
            return None
        model = _inner_model(field.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _is_mapping_of_models(tp: Any) -> bool:
    return typing.get_origin(tp) is dict


def _inner_model(tp: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType, list, dict, typing.Annotated):
        for arg in reversed(typing.get_args(tp)):
            inner = _inner_model(arg)
            if inner is not None:
                return inner
    return None


def _known_fields(loc: Loc, root: type[BaseModel]) -> list[str]:
    model = _model_at(loc, root)
    return list(model.model_fields) if model else []


@contextmanager
def pythonpath(folder: Path) -> Iterator[None]:
    """Let ``module:function`` names resolve beside kiln.yaml, for the duration of a call."""
    entry = str(folder.resolve())
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def _forget_other_copy(module_name: str, base_dir: Path) -> None:
    """A module beside this kiln.yaml wins over a module of the same name imported earlier from
    another folder (two pipelines' ``train.py`` in one process): forget the other copy."""
    local = base_dir.resolve() / (module_name.replace(".", "/") + ".py")
    cached = sys.modules.get(module_name)
    if cached is None or not local.is_file():
        return
    cached_file = getattr(cached, "__file__", None)
    if cached_file is None or Path(cached_file).resolve() != local:
        del sys.modules[module_name]
        importlib.invalidate_caches()


def import_object(spec: str, *, base_dir: Path, where: str, field: str) -> Any:
    """Import ``pkg.mod.Name`` or ``module:function``; a failure names the config field."""
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
    else:
        module_name, _, attr = spec.rpartition(".")
    with pythonpath(base_dir):
        _forget_other_copy(module_name, base_dir)
        try:
            module = importlib.import_module(module_name)
        except Exception as e:
            raise ConfigError(
                f"{where}: {field}: cannot import module {module_name!r} ({type(e).__name__}: {e})",
                hint=f"install the package that provides it, or put {module_name}.py "
                f"beside the config in {base_dir}",
            ) from e
    try:
        return getattr(module, attr)
    except AttributeError:
        names = [n for n in dir(module) if not n.startswith("_")]
        close = difflib.get_close_matches(attr, names, n=1)
        raise ConfigError(
            f"{where}: {field}: module {module_name!r} has no attribute {attr!r}"
            + (f"; did you mean {close[0]!r}?" if close else ""),
            hint="check the spelling of the class or function name",
        ) from None
