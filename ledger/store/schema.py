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
    event,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from ledger.domain import limits
from ledger.domain.audit.canonical import CHAIN_ENCODING


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
        if value is None:
            return None
        if isinstance(value, str):
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


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
    Column("event_id", String(limits.EVENT_ID_CHARS), primary_key=True),
    Column("user_id", String(limits.USER_ID_CHARS), nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("recorded_at", UTCDateTime(), nullable=False),
    Column("type", String(limits.EVENT_TYPE_CHARS), nullable=False),
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
    Column("source", Text, nullable=False),
    Column("position", Text, nullable=False),
    # The user's applied events counted in application order (1, 2, ...). Two writers that
    # both append a user's next event collide on this key: optimistic concurrency, as
    # eventsourcing's (originator_id, originator_version).
    Column("seq", Integer, nullable=False),
    # The audit trail (docs/audit.md). app_seq: the store's application order across users (a
    # database sequence on PostgreSQL, so writers never contend for it); a digest covers
    # the events up to one app_seq. link: SHA-256 of the user's previous link and this
    # row's fields (ledger.domain.audit.chain), 32 bytes.
    Column("app_seq", BigInteger, nullable=False),
    Column("link", LargeBinary(32), nullable=False),
    Index("ix_events_user", "user_id", "occurred_at"),
    UniqueConstraint("user_id", "seq", name="uq_events_user_seq"),
    UniqueConstraint("app_seq", name="uq_events_app_seq"),
)

# PostgreSQL hands out app_seq; SQLite has one writer at a time, which counts on.
APP_SEQ = Sequence("events_app_seq", metadata=metadata)

users = Table(
    "users",
    metadata,
    Column("user_id", String(limits.USER_ID_CHARS), primary_key=True),
    Column("signup_at", UTCDateTime()),
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
    Column("since", UTCDateTime()),
    Column("events", Integer, nullable=False),  # also the length of the user's chain
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("chain_head", LargeBinary(32), nullable=False),  # the last event's link
    Index("ix_users_assignment", "assignment"),
)

assignment_history = Table(
    "assignment_history",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("user_id", String(limits.USER_ID_CHARS), nullable=False),
    Column("valid_from", UTCDateTime(), nullable=False),
    Column("valid_to", UTCDateTime()),
    Column("assignment", String(40), nullable=False),
    Column("policy", String(100), nullable=False),
    Column("rule", String(40), nullable=False),
    Column("reason", Text, nullable=False),
    Column("facts", JSON, nullable=False),
    Column("evidence", JSON, nullable=False),
    Column("recorded_at", UTCDateTime(), nullable=False),
    Column("superseded_at", UTCDateTime()),
    # Content hash of the policy that decided the row (ledger.domain.audit.stable_ids).
    Column("policy_hash", String(64), nullable=False),
    Index("ix_history_user", "user_id", "valid_from"),
)

# Every policy version the store has decided with, and the content it had then: the same
# version with other content is refused (ledger.app.ports.PolicyChanged).
policy_pins = Table(
    "policy_pins",
    metadata,
    Column("version", String(limits.TOS_VERSION_CHARS), primary_key=True),
    Column("hash", String(64), nullable=False),
    Column("pinned_at", UTCDateTime(), nullable=False),
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
