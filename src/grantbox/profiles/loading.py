"""Reading profile documents: YAML (one or several documents) or JSON, strictly.

Loading never raises on bad content: it returns what parsed plus diagnostics, so a lint of
a directory reports every problem in one pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .diagnostics import Diagnostic, field_path
from .model import Profile

PROFILE_SUFFIXES = (".yaml", ".yml", ".json")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of keeping the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass(frozen=True, slots=True)
class LoadedProfile:
    profile: Profile
    source: str


@dataclass(slots=True)
class LoadResult:
    profiles: list[LoadedProfile] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def extend(self, other: LoadResult) -> None:
        self.profiles.extend(other.profiles)
        self.diagnostics.extend(other.diagnostics)


def _documents(text: str, source: str, fmt: str) -> list[Any]:
    if fmt == "json":
        data = json.loads(text)
        return list(data) if isinstance(data, list) else [data]
    docs: list[Any] = []
    for doc in yaml.load_all(text, Loader=_StrictLoader):
        if doc is None:
            continue
        docs.extend(doc if isinstance(doc, list) else [doc])
    return docs


def _format_for(source: str, text: str) -> str:
    if source.endswith(".json"):
        return "json"
    if source.endswith((".yaml", ".yml")):
        return "yaml"
    return "json" if text.lstrip().startswith(("{", "[")) else "yaml"


def _pydantic_message(error: Any) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind in ("tuple_type", "list_type"):
        return "expected a list (write [value] for a single value)"
    if kind == "enum":
        expected = error.get("ctx", {}).get("expected", "")
        return f"unknown value {error.get('input')!r}; expected {expected}"
    return str(error.get("msg", "invalid value"))


def parse_profile(data: Any, source: str) -> tuple[Profile | None, list[Diagnostic]]:
    """Build one profile from parsed data, or say exactly which fields are wrong."""
    label = source
    if isinstance(data, dict) and isinstance(data.get("id"), str) and data["id"]:
        label = data["id"]
    if not isinstance(data, dict):
        return None, [Diagnostic(label, "", "a profile document must be a mapping")]
    try:
        return Profile.model_validate(data), []
    except ValidationError as exc:
        diagnostics = []
        for error in exc.errors():
            location = [
                p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-"))
            ]
            diagnostics.append(Diagnostic(label, field_path(location), _pydantic_message(error)))
        return None, diagnostics


def load_text(text: str, source: str = "<input>", fmt: str | None = None) -> LoadResult:
    """Load every profile in a YAML or JSON text."""
    result = LoadResult()
    try:
        docs = _documents(text, source, fmt or _format_for(source, text))
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        message = " ".join(str(exc).split())
        result.diagnostics.append(Diagnostic(source, "", f"cannot parse: {message}"))
        return result
    if not docs:
        result.diagnostics.append(Diagnostic(source, "", "no profile documents found"))
    for index, doc in enumerate(docs):
        where = source if len(docs) == 1 else f"{source}#{index}"
        profile, diagnostics = parse_profile(doc, where)
        result.diagnostics.extend(diagnostics)
        if profile is not None:
            result.profiles.append(LoadedProfile(profile, where))
    return result


def load_file(path: Path) -> LoadResult:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        result = LoadResult()
        result.diagnostics.append(Diagnostic(str(path), "", f"cannot read: {exc}"))
        return result
    return load_text(text, str(path))


def profile_files(directory: Path) -> list[Path]:
    """Profile files directly in a directory, in name order."""
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in PROFILE_SUFFIXES)


def load_paths(paths: Iterable[Path]) -> LoadResult:
    """Load files and directories (a directory contributes its profile files)."""
    result = LoadResult()
    for path in paths:
        if path.is_dir():
            files = profile_files(path)
            if not files:
                result.diagnostics.append(
                    Diagnostic(str(path), "", "directory holds no .yaml, .yml or .json files")
                )
            for file in files:
                result.extend(load_file(file))
        else:
            result.extend(load_file(path))
    return result
