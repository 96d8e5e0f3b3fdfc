"""The `dead_letters` table for the people who repair it: listing, reading one, marking the
ones a retry run settled, and deleting old ones (retention).

The projector only ever appends dead letters (`ledger.store.batch_writer.write_plan`); this module
is the operator's side. Listing never reads the `raw` column: raw input may contain
personal data, and only `get` and `iter_with_raw` (for `dead-letters show` and `export`)
hand it out.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, Select, delete, func, select, update

from ledger.store.errors import translated_errors
from ledger.store.schema import dead_letters

_dl = dead_letters.c
# Rows of up to a megabyte of raw input each: read them a few at a time.
_RAW_CHUNK = 100


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    id: int
    source: str
    position: str
    reason: str
    raw: bytes | None  # None when the query did not read it (listings)
    raw_size: int
    event_id: str | None
    user_id: str | None
    recorded_at: datetime
    partition: int | None
    offset: int | None
    resolved_at: datetime | None
    resolution: str | None

    @property
    def truncated(self) -> bool:
        """The raw input was cut to the store's limit when it was dead-lettered."""
        return self.raw is not None and self.raw_size > len(self.raw)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a command means; every field narrows, None means any."""

    reason: str | None = None  # substring, case-insensitive
    source: str | None = None  # prefix of the source key: file:..., kafka:..., redrive:...
    since: datetime | None = None  # recorded at or after
    before: datetime | None = None  # recorded strictly before
    unresolved: bool = True  # only those no retry run has settled
    ids: Sequence[int] | None = None


_LISTED = [c for c in dead_letters.c if c.name != "raw"]


def _row(row: Any, with_raw: bool) -> DeadLetterRow:
    return DeadLetterRow(
        id=row.id,
        source=row.source,
        position=row.position,
        reason=row.reason,
        raw=bytes(row.raw) if with_raw else None,
        raw_size=row.raw_size,
        event_id=row.event_id,
        user_id=row.user_id,
        recorded_at=row.recorded_at,
        partition=row.partition,
        offset=row.offset,
        resolved_at=row.resolved_at,
        resolution=row.resolution,
    )


# Any select of the table, whatever its columns (a list, a count).
_S = TypeVar("_S", bound=Select)  # type: ignore[type-arg]


def _where(q: _S, sel: Selection) -> _S:
    if sel.reason is not None:
        q = q.where(_dl.reason.icontains(sel.reason, autoescape=True))
    if sel.source is not None:
        q = q.where(_dl.source.startswith(sel.source, autoescape=True))
    if sel.since is not None:
        q = q.where(_dl.recorded_at >= sel.since)
    if sel.before is not None:
        q = q.where(_dl.recorded_at < sel.before)
    if sel.unresolved:
        q = q.where(_dl.resolved_at.is_(None))
    if sel.ids is not None:
        q = q.where(_dl.id.in_(list(sel.ids)))
    return q


def list_dead_letters(
    engine: Engine, sel: Selection, limit: int | None = None
) -> list[DeadLetterRow]:
    """Matching dead letters, oldest first, without their raw input."""
    q = _where(select(*_LISTED), sel).order_by(_dl.id)
    if limit is not None:
        q = q.limit(limit)
    with translated_errors(), engine.connect() as conn:
        return [_row(r, with_raw=False) for r in conn.execute(q)]


def count(engine: Engine, sel: Selection) -> tuple[int, int]:
    """(matching dead letters, of which unresolved)."""
    q = _where(select(func.count(), func.count().filter(_dl.resolved_at.is_(None))), sel)
    with translated_errors(), engine.connect() as conn:
        total, unresolved = conn.execute(q).one()
    return int(total), int(unresolved)


def get(engine: Engine, dead_letter_id: int) -> DeadLetterRow | None:
    """One dead letter with its raw input."""
    with translated_errors(), engine.connect() as conn:
        row = conn.execute(select(dead_letters).where(_dl.id == dead_letter_id)).first()
    return _row(row, with_raw=True) if row is not None else None


def ids(engine: Engine, sel: Selection) -> list[int]:
    """The ids of the matching dead letters, oldest first: fixed before a retry run starts, so
    the dead letters the retry run itself writes are not picked up by the same run."""
    with translated_errors(), engine.connect() as conn:
        return list(conn.execute(_where(select(_dl.id), sel).order_by(_dl.id)).scalars())


def iter_with_raw(engine: Engine, dead_letter_ids: Sequence[int]) -> Iterator[DeadLetterRow]:
    """These dead letters with their raw input, in the order given, a few rows at a time."""
    for i in range(0, len(dead_letter_ids), _RAW_CHUNK):
        chunk = list(dead_letter_ids[i : i + _RAW_CHUNK])
        with translated_errors(), engine.connect() as conn:
            rows = {r.id: r for r in conn.execute(select(dead_letters).where(_dl.id.in_(chunk)))}
        # A row purged meanwhile is simply gone.
        yield from (_row(rows[n], with_raw=True) for n in chunk if n in rows)


def resolve(engine: Engine, dead_letter_id: int, resolved_at: datetime, resolution: str) -> bool:
    """Mark an unresolved dead letter as settled; False when it was settled already (by a
    concurrent retry run, say), whose resolution then stands."""
    q = (
        update(dead_letters)
        .where(_dl.id == dead_letter_id)
        .where(_dl.resolved_at.is_(None))
        .values(resolved_at=resolved_at, resolution=resolution)
    )
    with translated_errors(), engine.begin() as conn:
        return conn.execute(q).rowcount == 1


def at_position(engine: Engine, source: str, partition: int, offset: int) -> int | None:
    """The id of the dead letter recorded for this source position (the newest if several)."""
    q = (
        select(func.max(_dl.id))
        .where(_dl.source == source)
        .where(_dl.partition == partition)
        .where(_dl.offset == offset)
    )
    with translated_errors(), engine.connect() as conn:
        return conn.execute(q).scalar()


def purge(engine: Engine, before: datetime) -> int:
    """Delete every dead letter recorded before `before`; returns how many."""
    with translated_errors(), engine.begin() as conn:
        return conn.execute(delete(dead_letters).where(_dl.recorded_at < before)).rowcount


class SqlDeadLetters:
    """What a retry run (`ledger.app.ports.RetryLedger`) needs, on one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def resolve(self, dead_letter_id: int, resolved_at: datetime, resolution: str) -> bool:
        return resolve(self.engine, dead_letter_id, resolved_at, resolution)

    def dead_letter_at(self, source: str, partition: int, offset: int) -> int | None:
        return at_position(self.engine, source, partition, offset)
