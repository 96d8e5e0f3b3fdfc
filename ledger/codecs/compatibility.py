"""`ledger schema check`: the current event schemas against every released version, under
the compatibility modes of Confluent Schema Registry (docs/event-contract.md).

- backward: the current version reads what a released version wrote (the reader is the
  current schema, the writer the released one);
- forward: a released version reads what the current version writes;
- full: both.

Without `transitive` the current version is compared with the latest release only, with
it against every release. Whether a reader can read a writer is decided by Apache Avro's
own checker (`avro.compatibility`, the rules of the Avro specification's "Schema
Resolution"), never by rules written here. This module only finds where an
incompatibility is, to name it with its path: the checker merges every finding of a
record into one set of messages and one of locations, and judges a union branch as a
whole ("reader union lacking writer type: RECORD" for one changed field of one event
type). So after the checker's verdict on the whole envelope, the parts of the two schemas
are handed to the same checker one by one, field by field and union branch by branch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from avro.errors import AvroException
from avro.schema import parse

from ledger.codecs.releases import FINGERPRINTS, SCHEMA_VERSION, Release, load_releases

Mode = Literal["backward", "forward", "full"]
MODES: tuple[Mode, ...] = ("backward", "forward", "full")
Direction = Literal["backward", "forward"]
DIRECTIONS: dict[Mode, tuple[Direction, ...]] = {
    "backward": ("backward",),
    "forward": ("forward",),
    "full": ("backward", "forward"),
}

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


@dataclass(frozen=True)
class Incompatibility:
    path: str  # "AccountEvent.payload[SignedUp].phone": where, in the reader's terms
    kind: str  # the checker's name for it ("type_mismatch", "missing_union_branch", ...)
    message: str  # the checker's message, and what it means here

    def text(self) -> str:
        return f"{self.path}: {self.message} ({self.kind})"

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "kind": self.kind, "message": self.message}


@dataclass(frozen=True)
class Comparison:
    """The current version against one released version in one direction."""

    release: int
    current: int
    direction: Direction
    incompatibilities: tuple[Incompatibility, ...]

    @property
    def reader(self) -> int:
        return self.current if self.direction == "backward" else self.release

    @property
    def writer(self) -> int:
        return self.release if self.direction == "backward" else self.current

    @property
    def compatible(self) -> bool:
        return not self.incompatibilities

    def sentence(self) -> str:
        if self.direction == "backward":
            return f"version {self.current} reads what version {self.release} wrote"
        return f"version {self.release} reads what version {self.current} writes"

    def to_json(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "direction": self.direction,
            "reader": self.reader,
            "writer": self.writer,
            "compatible": self.compatible,
            "incompatibilities": [i.to_json() for i in self.incompatibilities],
        }


@dataclass
class SchemaCheck:
    current: int
    mode: Mode
    transitive: bool
    directory: str
    compared: list[int] = field(default_factory=list)  # the released versions compared with
    comparisons: list[Comparison] = field(default_factory=list)
    # Released versions whose schemas are not what was released (their pinned fingerprint)
    changed_releases: list[str] = field(default_factory=list)

    @property
    def incompatibilities(self) -> int:
        return sum(len(c.incompatibilities) for c in self.comparisons)

    @property
    def ok(self) -> bool:
        return not self.incompatibilities and not self.changed_releases

    def to_json(self) -> dict[str, Any]:
        return {
            "schemas": self.directory,
            "current": self.current,
            "mode": self.mode,
            "transitive": self.transitive,
            "compared": self.compared,
            "compatible": self.ok,
            "comparisons": [c.to_json() for c in self.comparisons],
            "changed_releases": self.changed_releases,
        }


def check_schemas(
    root: Path | None = None, mode: Mode = "backward", *, transitive: bool = False
) -> SchemaCheck:
    """Compare the current schemas of `root` (a directory laid out as `schemas/`; default
    the shipped ones) with its released versions under `mode`. The shipped schemas are
    also held to the pinned fingerprints of their released versions."""
    releases = load_releases(root)
    for release in releases:
        # The checker below would call a schema it cannot parse incompatible; say what it is.
        try:
            release.fingerprint  # noqa: B018 (parses the schema)
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
            raise ValueError(
                f"version {release.version} ({release.directory}) is no Avro schema: {problem}"
            ) from None
    current, released = releases[-1], releases[:-1]
    compared = released if transitive else released[-1:]
    report = SchemaCheck(
        current.version, mode, transitive, str(root or "schemas"), [r.version for r in compared]
    )
    if root is None:
        report.changed_releases = _changed(releases)
    for release in compared:
        for direction in DIRECTIONS[mode]:
            reader, writer = (current, release) if direction == "backward" else (release, current)
            found = tuple(incompatibilities(reader.envelope, writer.envelope))
            report.comparisons.append(
                Comparison(release.version, current.version, direction, found)
            )
    return report


def _changed(releases: list[Release]) -> list[str]:
    """What differs from the pinned fingerprints (`ledger.codecs.releases.FINGERPRINTS`)."""
    problems = []
    versions = {r.version: r for r in releases}
    if max(versions) != SCHEMA_VERSION:
        problems.append(
            f"the schemas are laid out as version {max(versions)}, but the ledger writes "
            f"version {SCHEMA_VERSION} (ledger.codecs.releases.SCHEMA_VERSION)"
        )
    for version, pinned in sorted(FINGERPRINTS.items()):
        release = versions.get(version)
        if release is None:
            problems.append(f"version {version} (fingerprint {pinned}) is missing")
        elif release.fingerprint != pinned:
            where = "schemas/*.avsc" if version == max(versions) else f"releases/{version}/"
            problems.append(
                f"version {version} in {where} has fingerprint {release.fingerprint}, but was "
                f"released as {pinned}: a released version never changes (a change is the "
                "next version)"
            )
    return problems


# --- finding where ----------------------------------------------------------------------

_CHECKER_ERRORS = (AvroException, ValueError, TypeError, KeyError)


def _verdict(reader: Any, writer: Any) -> Any | None:
    """The checker's result for two schemas in JSON form; None when either part cannot
    stand alone as a schema (a reference to a type defined elsewhere)."""
    try:
        return ReaderWriterCompatibilityChecker().get_compatibility(  # type: ignore[no-untyped-call]
            parse(json.dumps(reader)), parse(json.dumps(writer))
        )
    except _CHECKER_ERRORS:
        return None


def _compatible(reader: Any, writer: Any) -> bool:
    result = _verdict(reader, writer)
    return result is not None and result.compatibility is SchemaCompatibilityType.compatible


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, Mapping):
        return str(schema.get("type"))
    return str(schema)


def _name(schema: Any) -> str:
    """A union branch as a path shows it: a named type's short name, else its type."""
    if isinstance(schema, Mapping) and "name" in schema:
        return str(schema["name"]).rsplit(".", 1)[-1]
    return _kind(schema)


def _full_name(schema: Any) -> str | None:
    if not isinstance(schema, Mapping) or "name" not in schema:
        return None
    name = str(schema["name"])
    namespace = schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _same_branch(reader: Any, writer: Any) -> bool:
    """Whether a reader's union branch is the one Avro resolution would pick for a writer's
    branch by identity (named types by full name or alias, others by type)."""
    if _full_name(writer) is not None:
        aliases = reader.get("aliases", []) if isinstance(reader, Mapping) else []
        return _full_name(reader) == _full_name(writer) or _full_name(writer) in aliases
    return _kind(reader) == _kind(writer)


def _leaves(reader: Any, writer: Any, path: str) -> Iterator[Incompatibility]:
    result = _verdict(reader, writer)
    if result is None:
        yield Incompatibility(path, "unreadable", "the checker cannot take this part alone")
        return
    if result.compatibility is SchemaCompatibilityType.compatible:
        return
    kinds = sorted({k.value for k in result.incompatibilities})
    message = "; ".join(sorted(result.messages))
    if kinds == ["missing_enum_symbols"]:  # the checker's message is the set alone
        message = f"the reader's enum lacks the writer's symbols {message}"
    yield Incompatibility(path, ", ".join(kinds), message)


def incompatibilities(reader: Any, writer: Any, path: str = "") -> Iterator[Incompatibility]:
    """Where `reader` (JSON form) cannot read what `writer` wrote, by the checker's rules:
    nothing when the checker finds the two compatible."""
    if _compatible(reader, writer):
        return
    path = path or _name(reader)
    found = list(_descend(reader, writer, path))
    # The descent only locates; should it find nothing, the checker's verdict still stands.
    yield from found or _leaves(reader, writer, path)


def _descend(reader: Any, writer: Any, path: str) -> Iterator[Incompatibility]:
    r_kind, w_kind = _kind(reader), _kind(writer)
    if r_kind == w_kind == "record":
        yield from _records(reader, writer, path)
    elif r_kind == w_kind == "union":
        for branch in writer:
            yield from _branch(reader, branch, f"{path}[{_name(branch)}]")
    elif w_kind == "union":
        for branch in writer:
            yield from incompatibilities(reader, branch, f"{path}[{_name(branch)}]")
    elif r_kind == "union":
        yield from _branch(reader, writer, path)
    else:
        yield from _leaves(reader, writer, path)


def _branch(reader_union: list[Any], branch: Any, path: str) -> Iterator[Incompatibility]:
    """One writer branch against the reader's union."""
    if _compatible(reader_union, branch):
        return
    match = next((r for r in reader_union if _same_branch(r, branch)), None)
    if match is None:
        kinds = sorted(_kind(r) if _kind(r) in _PRIMITIVES else _name(r) for r in reader_union)
        yield Incompatibility(
            path,
            "missing_union_branch",
            f"the reader's union has no {_name(branch)} (it has {', '.join(kinds)}), so what "
            "the writer wrote of it cannot be read: a type removed or renamed, or added since",
        )
        return
    yield from incompatibilities(match, branch, path)


def _records(
    reader: Mapping[str, Any], writer: Mapping[str, Any], path: str
) -> Iterator[Incompatibility]:
    named: dict[str, Any] = {"type": "record", "fields": []}
    names = ({**named, "name": _full_name(reader)}, {**named, "name": _full_name(writer)})
    if not _compatible(*names):
        yield Incompatibility(
            path,
            "name_mismatch",
            f"the reader's record is {_full_name(reader)}, the writer's {_full_name(writer)} "
            "(a renamed record needs the old name among its aliases)",
        )
    by_name = {f["name"]: f for f in writer.get("fields", [])}
    for reader_field in reader.get("fields", []):
        name = reader_field["name"]
        where = f"{path}.{name}"
        writer_field = by_name.get(name) or next(
            (by_name[a] for a in reader_field.get("aliases", []) if a in by_name), None
        )
        if writer_field is None:
            alone = {**named, "name": _full_name(reader), "fields": [reader_field]}
            if not _compatible(alone, {**named, "name": _full_name(reader)}):
                yield Incompatibility(
                    where,
                    "reader_field_missing_default_value",
                    "the writer has no such field and the reader gives it no default",
                )
            continue
        yield from incompatibilities(reader_field["type"], writer_field["type"], where)
