#!/usr/bin/env python3
"""Residency router: a reference consumer of the jurisdiction ledger's changefeed.

It keeps a table of where each user's data must live, as the ledger decides it:

    xhs-domestic           -> mainland-china
    rednote-international  -> singapore
    undetermined           -> none (no rulebook yet, so no residency either)

and prints a line whenever a user's residency changes, which is where a storage system
would start moving that user's data:

    move u-000123: singapore -> mainland-china (decision 3f2a..., seq 812, rule R2)

Run it (see examples/README.md):

    python examples/residency_router.py --bootstrap localhost:9092 --until-idle 5

How it reads the feed
---------------------
* `rulebook-changes` carries every decision the ledger makes, keyed by user id, so one
  user's decisions arrive in order on one partition. This program reads it as a consumer
  group member and commits its offsets only after it has processed what it polled: at
  least once, never at most once.
* Records are Avro single-object encoded: C3 01, the 8-byte CRC-64-AVRO fingerprint of
  the writer schema, then the Avro body. This program decodes them with fastavro and the
  shipped schema files (schemas/changefeed/RulebookDecision-*.avsc), looking the writer
  schema up by fingerprint and resolving it to the version it was written against
  (READER_VERSION). It imports nothing from the ledger itself: copy this file and the
  .avsc files and it runs with `pip install kafka-python fastavro`.
* Delivery is at least once (the relay re-sends its last round after a crash), so the
  same decision may arrive twice: records are deduplicated by `decision_id`, keeping the
  one with the highest `seq`.
* A user's current assignment is their open-ended decision (`valid_to` null) with the
  highest `seq`. Decisions with an end (`valid_to` set) describe the past or a correction
  of it; they never change where the data lives now.

What it does not do
-------------------
The table lives in memory. A group that resumes from committed offsets (no
--from-beginning) prints the moves since and knows only the users it saw since; a
production router would store the table with its offsets, or build it on start from the
compacted `rulebook-current` topic (one record per user: their current decision).
"""

from __future__ import annotations

import argparse
import io
import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, cast

from fastavro import parse_schema, schemaless_reader
from fastavro.schema import fingerprint, to_parsing_canonical_form
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError

# -- what a decision means for data residency --------------------------------------------

# By rulebook id, not by the rulebook's prose (`terms.data_residency` in the record is
# text for people: "stored in mainland China", "stored in Singapore, ...").
RESIDENCY = {
    "xhs-domestic": "mainland-china",
    "rednote-international": "singapore",
    "undetermined": "none",
}
RESIDENCIES = ("mainland-china", "singapore", "none")
UNKNOWN_RULEBOOK = "unknown"  # a rulebook newer than this program: route it by hand

# -- decoding: Avro single-object encoding with the shipped schemas ----------------------

MAGIC = b"\xc3\x01"
SCHEMA_NAME = "RulebookDecision"
READER_VERSION = 1  # the schema version this program's code reads
DEFAULT_SCHEMAS = Path(__file__).resolve().parent.parent / "schemas" / "changefeed"


class UnreadableRecord(ValueError):
    """A record that is not a decision of a schema version this program has."""


class DecisionDecoder:
    """Decodes changefeed records with the schema files in one directory."""

    def __init__(self, schema_dir: Path) -> None:
        # fingerprint -> parsed writer schema, for every version shipped; a record names
        # the version that wrote it by fingerprint.
        self.writers: dict[bytes, Any] = {}
        self.reader: Any = None
        for path in sorted(schema_dir.glob(f"{SCHEMA_NAME}-*.avsc")):
            parsed = parse_schema(json.loads(path.read_text()))
            # CRC-64-AVRO of the schema's canonical form, as 8 little-endian bytes.
            fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
            self.writers[fp] = parsed
            if path.stem == f"{SCHEMA_NAME}-{READER_VERSION}":
                self.reader = parsed
        if self.reader is None:
            raise SystemExit(f"no {SCHEMA_NAME}-{READER_VERSION}.avsc in {schema_dir}")

    def decode(self, value: bytes) -> dict[str, Any]:
        if value[:2] != MAGIC or len(value) < 10:
            raise UnreadableRecord("not Avro single-object encoded (no C3 01 header)")
        writer = self.writers.get(value[2:10])
        if writer is None:
            raise UnreadableRecord(
                f"unknown writer schema fingerprint {value[2:10].hex()}: a newer "
                f"{SCHEMA_NAME} version? Add its .avsc to the schema directory."
            )
        # Schema resolution: a record of another version is read as READER_VERSION.
        record = schemaless_reader(io.BytesIO(value[10:]), writer, self.reader)
        return cast("dict[str, Any]", record)  # a record schema decodes to a dict


# -- the table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Current:
    """A user's current decision, as the table keeps it."""

    residency: str
    assignment: str
    decision_id: str
    seq: int
    rule: str
    since: datetime  # the decision's valid_from

    def to_json(self) -> dict[str, Any]:
        return {
            "residency": self.residency,
            "assignment": self.assignment,
            "decision_id": self.decision_id,
            "seq": self.seq,
            "rule": self.rule,
            "since": self.since.isoformat(),
        }


@dataclass(frozen=True)
class Move:
    """A change of a user's residency. `before` None: the first decision seen for the
    user; `after` None: the user was erased."""

    user_id: str
    before: str | None
    after: str | None
    decision_id: str | None  # None: a tombstone on rulebook-current erased the user
    seq: int | None
    rule: str | None  # None: an erasure, which no rule decided
    kind: str

    def to_text(self) -> str:
        before = self.before or "(new)"
        after = self.after or "(erased)"
        where = [
            f"{name} {value}"
            for name, value in (
                ("decision", self.decision_id),
                ("seq", self.seq),
                ("rule", self.rule),
            )
            if value is not None
        ]
        return f"move {self.user_id}: {before} -> {after} ({', '.join(where) or 'tombstone'})"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "move",
            "user_id": self.user_id,
            "from": self.before,
            "to": self.after,
            "decision_id": self.decision_id,
            "seq": self.seq,
            "rule": self.rule,
            "kind": self.kind,
        }


class ResidencyTable:
    """Each user's current residency, built from decisions in any order and with any
    number of copies."""

    def __init__(self) -> None:
        self.users: dict[str, Current] = {}
        # The highest seq seen per decision: what makes a re-delivered record a no-op.
        # One entry per decision; a long-running router would bound it (e.g. forget ids
        # below the lowest seq it can still be sent again) or rely on the per-user seq
        # check below alone, which by itself already ignores stale copies.
        self.seen: dict[str, int] = {}
        # Per user, the seq of the decision that last set their row (or erased them), so
        # an older decision arriving late does not overwrite a newer one.
        self.last_seq: dict[str, int] = {}
        self.records = 0
        self.duplicates = 0

    def apply(self, decision: Mapping[str, Any]) -> Move | None:
        """Take one decision; the move it makes, if it changes the user's residency."""
        self.records += 1
        decision_id: str = decision["decision_id"]
        seq: int = decision["seq"]
        if self.seen.get(decision_id, -1) >= seq:
            self.duplicates += 1
            return None
        self.seen[decision_id] = seq

        user: str = decision["user_id"]
        erased = decision["kind"] == "erased"
        if decision["valid_to"] is not None and not erased:
            return None  # a closed period: history, not where the data lives now
        if seq <= self.last_seq.get(user, -1):
            return None  # an older decision than the one the table already holds
        self.last_seq[user] = seq

        old = self.users.get(user)
        before = old.residency if old else None
        if erased:
            self.users.pop(user, None)
            after = None
        else:
            assignment: str = decision["assignment"]
            after = RESIDENCY.get(assignment, UNKNOWN_RULEBOOK)
            self.users[user] = Current(
                residency=after,
                assignment=assignment,
                decision_id=decision_id,
                seq=seq,
                rule=decision["rule"],
                since=decision["valid_from"],
            )
        if before == after:
            return None  # a new decision, same residency (another rule, a new policy)
        return Move(user, before, after, decision_id, seq, decision["rule"], decision["kind"])

    def forget(self, user: str) -> Move | None:
        """A tombstone for the user's key (on `rulebook-current`, after an erasure): the
        user is gone; the move it makes, if the table held them."""
        self.records += 1
        old = self.users.pop(user, None)
        if old is None:
            return None
        return Move(user, old.residency, None, None, None, None, "erased")

    def counts(self) -> dict[str, int]:
        found = Counter(row.residency for row in self.users.values())
        return {r: found.get(r, 0) for r in (*RESIDENCIES, *sorted(set(found) - {*RESIDENCIES}))}

    def to_json(self) -> dict[str, Any]:
        return {user: self.users[user].to_json() for user in sorted(self.users)}


# -- reading the topic --------------------------------------------------------------------


class OnAssignment(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python is untyped
    """Says on stderr which partitions the group gave this member. With --from-beginning,
    reads each partition from its first record the first time it is assigned, whatever
    the group committed; a later assignment (a rebalance) resumes from the committed
    offsets, so nothing is read twice for no reason."""

    def __init__(self, consumer: KafkaConsumer, *, from_beginning: bool) -> None:
        self.consumer = consumer
        self.from_beginning = from_beginning
        self.rewound: set[TopicPartition] = set()

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        pass  # offsets are committed after every batch already

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = list(assigned)
        print(f"assigned {len(assigned)} partition(s)", file=sys.stderr, flush=True)
        new = [tp for tp in assigned if tp not in self.rewound]
        if self.from_beginning and new:
            self.consumer.seek_to_beginning(*new)
            self.rewound.update(new)


def caught_up(consumer: KafkaConsumer) -> bool:
    """Whether the member has partitions and has read each up to its end."""
    assigned = consumer.assignment()
    if not assigned:
        return False  # still joining the group
    ends = consumer.end_offsets(list(assigned))
    return all(consumer.position(tp) >= ends[tp] for tp in assigned)


def route(args: argparse.Namespace) -> int:
    decoder = DecisionDecoder(args.schemas)
    table = ResidencyTable()
    consumer = KafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        # Commit by hand, after processing: a crash re-reads, it never skips.
        enable_auto_commit=False,
        # A group with no committed offsets reads the topic from its start: the table
        # needs every decision. (Add SASL/TLS options here for a real cluster.)
        auto_offset_reset="earliest",
        # A reader never creates the topic it reads (a typo would make an empty one).
        allow_auto_create_topics=False,
        # Joining a group takes about half the session timeout; 10 s joins quickly and
        # still rides out short pauses. Heartbeats come from a background thread.
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
    )
    if not consumer.partitions_for_topic(args.topic):  # None or empty: no such topic
        consumer.close()
        print(f"error: no topic {args.topic!r} on {args.bootstrap}", file=sys.stderr)
        return 1
    listener = OnAssignment(consumer, from_beginning=args.from_beginning)
    consumer.subscribe([args.topic], listener=listener)

    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    started = time.monotonic()
    last_news = started
    try:
        while not stopping:
            batches = consumer.poll(timeout_ms=500)
            for records in batches.values():
                for message in records:
                    if message.value is None:
                        # A tombstone: the user was erased (rulebook-current); drop them.
                        key = message.key.decode("utf-8", "replace") if message.key else ""
                        move = table.forget(key)
                        if move is not None:
                            line = json.dumps(move.to_json()) if args.json else move.to_text()
                            print(line, flush=True)
                        continue
                    try:
                        decision = decoder.decode(message.value)
                    except UnreadableRecord as exc:
                        # Stop without committing: a router that knows the schema reads
                        # this record again. Skipping it could leave a user misrouted.
                        where = f"{message.topic}[{message.partition}]@{message.offset}"
                        print(f"error: {where}: {exc}", file=sys.stderr)
                        return 2
                    move = table.apply(decision)
                    if move is not None:
                        line = json.dumps(move.to_json()) if args.json else move.to_text()
                        print(line, flush=True)  # a move is news: don't keep it buffered
            if batches:
                try:
                    consumer.commit()  # everything polled is processed (and printed)
                except CommitFailedError:
                    # The group rebalanced meanwhile: the new owner of those partitions
                    # reads the uncommitted records again. At least once, as promised.
                    print("commit refused after a rebalance", file=sys.stderr)
                last_news = time.monotonic()
            elif args.until_idle is not None:
                # Idle time counts only once caught up: joining the group or fetching a
                # long backlog is not idleness.
                if not caught_up(consumer):
                    last_news = time.monotonic()
                elif time.monotonic() - last_news >= args.until_idle:
                    break
    finally:
        consumer.close(autocommit=False)

    report(table, args, time.monotonic() - started)
    return 0


# -- the end: summary and table -----------------------------------------------------------


def report(table: ResidencyTable, args: argparse.Namespace, seconds: float) -> None:
    counts = table.counts()
    if args.json:
        summary = {
            "type": "summary",
            "users": len(table.users),
            "residency": counts,
            "records": table.records,
            "duplicates": table.duplicates,
            "seconds": round(seconds, 3),
        }
        print(json.dumps(summary))
    else:
        print(f"residency table: {len(table.users)} users")
        for residency, n in counts.items():
            print(f"  {residency:<15} {n:>8}")
        print(f"read {table.records} records ({table.duplicates} duplicates) in {seconds:.1f} s")
    if args.table_out is not None:
        # Written whole, then renamed: a reader never sees half a table.
        partial = args.table_out.with_name(args.table_out.name + ".partial")
        partial.write_text(json.dumps(table.to_json(), indent=1) + "\n")
        partial.replace(args.table_out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Keep each user's data residency from the ledger's changefeed and "
        "print every change of it.",
    )
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap HOST:PORT")
    parser.add_argument("--topic", default="rulebook-changes", help="the changefeed topic")
    parser.add_argument("--group", default="residency-router", help="consumer group id")
    parser.add_argument(
        "--from-beginning",
        action="store_true",
        help="read every partition from its start, whatever the group committed",
    )
    parser.add_argument(
        "--until-idle",
        type=float,
        metavar="SECONDS",
        help="stop once caught up and SECONDS passed without a new record "
        "(default: run until SIGTERM/Ctrl-C)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON Lines")
    parser.add_argument(
        "--table-out", type=Path, metavar="FILE", help="write the table as JSON at the end"
    )
    parser.add_argument(
        "--schemas",
        type=Path,
        default=DEFAULT_SCHEMAS,
        metavar="DIR",
        help="directory of the RulebookDecision-*.avsc files (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return route(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
