"""The read model's tables (SQLAlchemy Core). Migrations in `ledger/store/migrations`
create exactly these; a test checks the two agree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    Date,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Sequence,
    String,
    Table,
    Text,
    UniqueConstraint,
    cast,
    event,
    func,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from ledger.domain import limits
from ledger.domain.audit.canonical import CHAIN_ENCODING
from ledger.store.rows import event_id_bytes, event_id_text, instant, instant_micros


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend.

    PostgreSQL stores timestamptz natively. SQLite has no time type: there the value is
    fixed-width ISO text in UTC ("2026-01-10 09:00:00.000000"), so it sorts and compares
    correctly in SQL, and converting costs one C call each way: this column type is on the
    hot path of every replay.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(26))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return sqlite_instant(value)
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return None if value is None else instant(value)


class EventId(TypeDecorator[str]):
    """Event ids, which are UUIDs in canonical text, as their 16 bytes (migration 0007):
    less than half the 36 characters, in the table and in its unique index."""

    impl = LargeBinary(16)
    cache_ok = True
    # The longest id it holds, in characters, as String(EVENT_ID_CHARS) did: validation's
    # limit (a test pins the two together).
    length = limits.EVENT_ID_CHARS

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else event_id_bytes(value)

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return None if value is None else event_id_text(value)


class Instant(UTCDateTime):
    """Aware UTC datetimes, compactly (migration 0007): on SQLite an integer of microseconds
    since the epoch (6 to 8 bytes instead of 26 of text, and no parsing: `instant_micros`),
    which sorts and compares as the time does; PostgreSQL keeps its native timestamptz.
    Microseconds, not milliseconds, because that is what the ISO text and timestamptz keep:
    the conversion loses nothing."""

    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is not None and dialect.name == "sqlite":
            return instant_micros(value)
        return super().process_bind_param(value, dialect)


def sqlite_instant(value: datetime) -> str:
    """An aware datetime as SQLite stores it (UTCDateTime); also the bulk writer's form."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


# SQLite autoincrements only INTEGER PRIMARY KEY; PostgreSQL needs room for billions.
ROW_ID = BigInteger().with_variant(Integer, "sqlite")

metadata = MetaData()

events = Table(
    "events",
    metadata,
    # The audit trail (docs/audit.md). app_seq: the store's application order across users (a
    # database sequence on PostgreSQL, so writers never contend for it); a digest covers
    # the events up to one app_seq. As the primary key it is SQLite's rowid: no index of
    # its own.
    Column("app_seq", ROW_ID, primary_key=True, autoincrement=False),
    # event_id, occurred_at and type are null only in an erased user's events (migration
    # 0010), which keep just seq, app_seq, record time, origin and link.
    Column("event_id", EventId()),
    Column("user_id", String(limits.USER_ID_CHARS), nullable=False),
    Column("occurred_at", Instant()),
    Column("recorded_at", Instant(), nullable=False),
    Column("type", String(limits.EVENT_TYPE_CHARS)),
    # Phone numbers are reduced: region, validity and a keyed hash, never the number.
    Column("phone_region", String(3)),
    Column("phone_valid", Boolean),
    Column("phone_hash", String(64)),
    Column("channel", String(limits.CHANNEL_CHARS)),
    Column("birth_date", Date),
    Column("country", String(limits.COUNTRY_CHARS)),
    Column("evidence", String(limits.EVIDENCE_CHARS)),
    Column("tos_version", String(limits.TOS_VERSION_CHARS)),
    # Event schema version 2 (migration 0005).
    Column("locale", String(limits.LOCALE_CHARS)),
    Column("document_country", String(limits.COUNTRY_CHARS)),
    Column("document_kind", String(limits.DOCUMENT_KIND_CHARS)),
    # Where the event came from: its source and position as `event_origins` keeps them.
    Column("origin_id", Integer, nullable=False),
    Column("origin_offset", BigInteger),
    # The user's applied events counted in application order (1, 2, ...). Two writers that
    # both append a user's next event collide on this key: optimistic concurrency, as
    # eventsourcing's (originator_id, originator_version).
    Column("seq", Integer, nullable=False),
    # link: SHA-256 of the user's previous link and this row's fields
    # (ledger.domain.audit.chain), 32 bytes.
    Column("link", LargeBinary(32), nullable=False),
    # Exactly once: an event is applied once, a user's events once each in order. The
    # second also serves every read by user (no index of its own on user_id).
    UniqueConstraint("event_id", name="uq_events_event_id"),
    UniqueConstraint("user_id", "seq", name="uq_events_user_seq"),
)

# Where events came from, interned: an event row keeps (origin_id, origin_offset) instead of
# its source key (69 characters for a file) and position text. The position is `prefix`
# followed by the offset in decimal ("name.avro#" 12, "topic[0]@" 345), or `prefix`
# alone when it does not end in a plain number (`ledger.store.rows.split_position`).
event_origins = Table(
    "event_origins",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("source", Text, nullable=False),
    Column("prefix", Text, nullable=False),
    UniqueConstraint("source", "prefix", name="uq_event_origins"),
)

# PostgreSQL hands out app_seq; SQLite has one writer at a time, which counts on.
APP_SEQ = Sequence("events_app_seq", metadata=metadata)

users = Table(
    "users",
    metadata,
    Column("user_id", String(limits.USER_ID_CHARS), primary_key=True),
    Column("signup_at", Instant()),
    Column("channel", String(limits.CHANNEL_CHARS)),
    Column("birth_date", Date),
    Column("signup_phone_region", String(3)),
    Column("signup_phone_valid", Boolean),
    Column("signup_phone_hash", String(64)),
    Column("current_phone_region", String(3)),
    Column("current_phone_valid", Boolean),
    Column("current_phone_hash", String(64)),
    Column("residence", String(limits.COUNTRY_CHARS)),
    Column("ip_country", String(limits.COUNTRY_CHARS)),
    Column("tos_version", String(limits.TOS_VERSION_CHARS)),
    Column("id_document_country", String(limits.COUNTRY_CHARS)),
    Column("id_document_kind", String(limits.DOCUMENT_KIND_CHARS)),
    Column("signup_locale", String(limits.LOCALE_CHARS)),
    # The latest history entry (valid time): the assignment "from now on".
    Column("assignment", String(40)),
    Column("policy", String(100)),
    Column("rule", String(40)),
    Column("since", Instant()),
    Column("events", Integer, nullable=False),  # also the length of the user's chain
    Column("updated_at", Instant(), nullable=False),
    Column("chain_head", LargeBinary(32), nullable=False),  # the last event's link
    Index("ix_users_assignment", "assignment"),
)

# One row per erased user (docs/data-protection.md, migration 0010): the erasure's request
# and record time, where it sits in the user's chain, what it found, and the hash of the
# history skeleton kept under LEDGER_RETAIN_ASSIGNMENTS=1 (null: nothing kept). The
# erasure's event row (type AccountErased) has the link that commits to all of it
# (ledger.domain.audit.erasure); `dead_letters` is a count the link leaves out, since a
# replay of the log need not have met the same dead letters.
erasures = Table(
    "erasures",
    metadata,
    Column("user_id", String(limits.USER_ID_CHARS), primary_key=True),
    Column("app_seq", BigInteger, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("request_id", String(limits.ERASURE_REQUEST_ID_CHARS), nullable=False),
    Column("erased_at", Instant(), nullable=False),
    Column("history_rows", Integer, nullable=False),
    Column("dead_letters", Integer, nullable=False),
    Column("retained_hash", LargeBinary(32)),
)

# An event row with its origin, and the position text the event arrived with (as
# `ledger.store.rows.join_position` puts it together).
EVENTS_WITH_ORIGIN = events.join(event_origins, event_origins.c.id == events.c.origin_id)
EVENT_POSITION = (
    event_origins.c.prefix + func.coalesce(cast(events.c.origin_offset, Text), "")
).label("position")

# What one history row decided, interned: a store holds a few dozen distinct decisions (a
# policy version's rules and their reasons), its history rows hundreds per user. Rows are
# never changed or removed, so an id names the same decision for good.
decisions = Table(
    "decisions",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("assignment", String(40), nullable=False),
    Column("policy", String(100), nullable=False),
    Column("rule", String(40), nullable=False),
    Column("reason", Text, nullable=False),
    # Content hash of the policy that decided the row (ledger.domain.audit.stable_ids).
    Column("policy_hash", String(64), nullable=False),
    UniqueConstraint("policy", "policy_hash", "rule", "assignment", "reason", name="uq_decisions"),
)

assignment_history = Table(
    "assignment_history",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("user_id", String(limits.USER_ID_CHARS), nullable=False),
    Column("valid_from", Instant(), nullable=False),
    Column("valid_to", Instant()),
    Column("decision_id", Integer, nullable=False),  # decisions.id
    Column("facts", JSON, nullable=False),
    Column("evidence", JSON, nullable=False),
    Column("recorded_at", Instant(), nullable=False),
    Column("superseded_at", Instant()),
    Index("ix_history_user", "user_id", "valid_from"),
)

# The changefeed's outbox (docs/changefeed.md): one row per history row, written in the
# batch's transaction, so a decision is announced if and only if it was recorded. A row
# names its history row by the key the writer addresses history rows with, and holds only
# what the history row does not. seq is the feed's position; on PostgreSQL the relay reads
# under a SHARE lock, so it never passes a seq that a writer still holds uncommitted.
decision_outbox = Table(
    "decision_outbox",
    metadata,
    Column("seq", ROW_ID, primary_key=True, autoincrement=True),
    Column("user_id", String(limits.USER_ID_CHARS), nullable=False),
    Column("valid_from", Instant(), nullable=False),
    Column("recorded_at", Instant(), nullable=False),
    Column("kind", String(16), nullable=False),  # assigned | corrected | erased
    # The event application that made it; null for rows migration 0008 backfilled.
    Column("app_seq", BigInteger),
    # False for a store rebuilt by replay: its decisions were announced by the store it
    # replaces, and the relay passes them over (`ledger replay --announce` says otherwise).
    Column("announce", Boolean, nullable=False),
)

# How far each relay has published the outbox, by target (the changes topic's name): stored
# once the broker acknowledged, so a restarted relay resends at most what was in flight.
changefeed_positions = Table(
    "changefeed_positions",
    metadata,
    Column("target", Text, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# A history row with its decision: what every reader selects from.
HISTORY_FROM = assignment_history.join(
    decisions, decisions.c.id == assignment_history.c.decision_id
)


def history_columns(*names: str) -> list[Any]:
    """The columns of HISTORY_FROM by their names before the decisions were interned."""
    d, h = decisions.c, assignment_history.c
    return [d[n] if n in d and n != "id" else h[n] for n in names]


# Every policy version the store has decided with, and the content it had then: the same
# version with other content is refused (ledger.app.ports.PolicyChanged).
policy_pins = Table(
    "policy_pins",
    metadata,
    Column("version", String(limits.TOS_VERSION_CHARS), primary_key=True),
    Column("hash", String(64), nullable=False),
    Column("pinned_at", UTCDateTime(), nullable=False),
)

# Every digest `ledger digest` issued (docs/audit.md), recorded as it was written, so an
# audit path can be given later against a digest that was published. `document` is the
# JSON text exactly as written (signed when a key was configured); the other columns
# repeat what is in it, for listing and for the path, and `block_size` is how many leaves
# each of its `digest_blocks` covers.
digests = Table(
    "digests",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("seq", BigInteger, nullable=False),
    Column("root", String(64), nullable=False),
    Column("users", BigInteger, nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("recorded_at", Instant(), nullable=False),
    Column("signature", String(32), nullable=False),  # the document's signature alg
    Column("block_size", Integer, nullable=False),
    Column("document", Text, nullable=False),
)

# The root of every aligned block of `block_size` leaves of a recorded digest, in leaf order
# (the last may be partial), and the user id that starts it: an audit path then
# recomputes one block of leaves from the events, not all of them.
digest_blocks = Table(
    "digest_blocks",
    metadata,
    Column("digest_id", Integer, primary_key=True, autoincrement=False),
    Column("block", Integer, primary_key=True, autoincrement=False),
    Column("first_user_id", String(limits.USER_ID_CHARS), nullable=False),
    Column("root", LargeBinary(32), nullable=False),
)

# Fingerprints of the keys the store's stored values depend on, by purpose ("phone": the
# HMAC key of the phone hashes), recorded with the first events (never the key itself): a
# writer under another key is refused (ledger.app.ports.PhoneKeyChanged).
key_fingerprints = Table(
    "key_fingerprints",
    metadata,
    Column("purpose", String(32), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("recorded_at", UTCDateTime(), nullable=False),
)

# The version of each encoding the store's stored values are in, by name ("chain": the
# chain encoding its event links and chain heads are computed under, docs/audit.md), so
# `ledger verify` recomputes links as they were made. Migration 0006 adds the "chain" row;
# a store without it (read before that migration) is under chain encoding 1.
store_formats = Table(
    "store_formats",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("version", Integer, nullable=False),
)
CHAIN_FORMAT = "chain"  # the name of the chain encoding's row in store_formats


@event.listens_for(store_formats, "after_create")
def _record_formats(target: Table, connection: Connection, **_: Any) -> None:
    # A store created from this schema holds no links yet: the writer's encoding is its.
    connection.execute(target.insert().values(name=CHAIN_FORMAT, version=CHAIN_ENCODING))


source_positions = Table(
    "source_positions",
    metadata,
    Column("source", Text, primary_key=True),
    Column("partition", Integer, primary_key=True, autoincrement=False),
    Column("next_offset", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    # Which incarnation of a topic the position belongs to: a recreated topic gets a new
    # id (or, on brokers without topic ids, may have another partition count).
    Column("topic_id", String(64)),
    Column("partition_count", Integer),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("source", Text, nullable=False),
    Column("position", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("raw", LargeBinary, nullable=False),  # bounded (ByteLimits.dead_letter_raw_bytes)
    Column("raw_size", BigInteger, nullable=False),  # of the input before bounding
    Column("event_id", String(limits.EVENT_ID_CHARS)),
    Column("user_id", String(limits.USER_ID_CHARS)),
    Column("recorded_at", UTCDateTime(), nullable=False),
    Column("partition", Integer),  # the source position, for a retry run
    Column("offset", BigInteger),
    Column("resolved_at", UTCDateTime()),  # set when a retry run applied (or settled) it
    Column("resolution", Text),
    Index("ix_dead_letters_recorded", "recorded_at"),
)
