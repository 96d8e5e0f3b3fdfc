"""Issue "Hostile input", part 1: every input is applied or dead-lettered, never fatal.

One regression test per kind of hostile value (times out of range, huge numbers and deep
nesting, text no database can encode, text over the column sizes, megabyte values, lines
too long to hold), each through the real CLI on SQLite and on PostgreSQL: the replay
finishes with exit status 3, each bad line is in `dead_letters` with a reason naming what
is wrong, every valid line around it is applied (the history equals a replay of the valid
lines alone), and a second replay applies nothing and does not fail. Then the same inputs
through `ledger publish` against the real broker. The smaller guarantees underneath (Avro
bounds, Kafka records, the column sizes) are in tests/unit/test_hostile_input.py.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import fastavro
import pytest
import sqlalchemy as sa

from ledger.codecs.avro import AvroCodec
from ledger.codecs.jsonl import event_from_json_line
from ledger.domain import limits
from ledger.domain.time import to_millis
from ledger.store.schema import dead_letters, events
from tests.helpers.hostile import (
    GOOD,
    HUGE,
    LIMIT,
    PUBLISH_BAD,
    Bad,
    accepts,
    dumps,
    huge_line_file,
    signup,
    verified,
    write_lines,
)
from tests.support import Cli, eid, history_rows


def _rows(url: str, table: sa.Table) -> list[sa.Row]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = list(conn.execute(sa.select(table)))
    engine.dispose()
    return rows


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Callable[[list[str]], list[tuple]]:
    """History rows of the valid lines alone, replayed into a database of their own."""
    cache: dict[tuple[str, ...], list[tuple]] = {}

    def rows(good: list[str]) -> list[tuple]:
        if tuple(good) not in cache:
            folder = tmp_path_factory.mktemp("reference")
            url = f"sqlite:///{folder / 'ledger.db'}"
            Cli(url).run("replay", str(write_lines(folder / "good.jsonl", list(good))))
            cache[tuple(good)] = history_rows(url)
        return cache[tuple(good)]

    return rows


def replay_mixed(
    cli: Cli,
    path: Path,
    bad: list[Bad],
    reference: Callable[[list[str]], list[tuple]],
    good: list[str] = GOOD,
) -> dict[str, object]:
    """Replay the first valid line, the bad ones, then the other valid ones; check the
    four promises of the module docstring and return the first replay's summary."""
    lines: list[str | bytes] = [good[0], *(line for line, _ in bad), *good[1:]]
    write_lines(path, lines)
    summary = cli.json("replay", str(path), expect=3)
    assert (summary["applied"], summary["dead_lettered"]) == (len(good), len(bad)), summary
    reasons = {row.position: row.reason for row in _rows(cli.db, dead_letters)}
    for line_no, (_, fragment) in enumerate(bad, start=2):
        reason = reasons[f"{path.name}:{line_no}"]
        assert fragment in reason, (line_no, reason)
        assert len(reason) <= 300, reason
    assert len(_rows(cli.db, events)) == len(good)
    assert history_rows(cli.db) == reference(good)
    again = cli.json("replay", str(path), expect=0)
    assert (again["applied"], again["dead_lettered"]) == (0, 0), again
    assert again["already_applied"] == len(lines)
    assert history_rows(cli.db) == reference(good)
    return summary


# --- values Python cannot represent -------------------------------------------------------


def test_times_out_of_range_once_converted_to_utc_are_dead_lettered(
    cli: Cli, tmp_path: Path, reference
) -> None:
    bad: list[Bad] = [
        (dumps(signup(10, "u-9", occurred_at="9999-12-31T23:59:59-05:00")), "occurred_at"),
        (dumps(signup(11, "u-9", occurred_at="0001-01-01T00:00:00+05:00")), "occurred_at"),
        (dumps(signup(12, "u-9", recorded_at="9999-12-31T23:59:59-05:00")), "recorded_at"),
        (dumps(signup(13, "u-9", recorded_at="0001-01-01T00:00:00+05:00")), "recorded_at"),
        # Representable, but no Kafka timestamp: publish could not send it.
        (dumps(signup(14, "u-9", recorded_at="1969-12-31T23:59:59Z")), "recorded_at"),
    ]
    replay_mixed(cli, tmp_path / "times.jsonl", bad, reference)
    reasons = [r.reason for r in _rows(cli.db, dead_letters)]
    assert any("out of range once converted to UTC" in r for r in reasons), reasons


def test_the_ends_of_the_kept_range_are_applied_and_beyond_them_dead_lettered(
    cli: Cli, tmp_path: Path, reference
) -> None:
    """The ends of the range the ledger keeps are valid and stored by both databases; a
    millisecond past them is not (`limits.EARLIEST_INSTANT`: a day inside Python's range,
    so a PostgreSQL session in any time zone reads them back)."""
    good = [
        *GOOD,
        dumps(signup(20, "u-early", occurred_at="0001-01-02T05:00:00+05:00")),
        dumps(signup(21, "u-late", occurred_at="9999-12-30T23:59:59.999Z")),
        dumps(signup(22, "u-late-record", recorded_at="9999-12-30T18:59:59-05:00")),
    ]
    outside = "outside the range the ledger keeps, 0001-01-02 to 9999-12-30 UTC"
    bad: list[Bad] = [
        (dumps(signup(23, "u-9", occurred_at="0001-01-02T04:59:59.999+05:00")), outside),
        (dumps(signup(24, "u-9", occurred_at="9999-12-31T00:00:00Z")), outside),
        (dumps(signup(25, "u-9", recorded_at="9999-12-31T00:00:00+00:00")), outside),
    ]
    replay_mixed(cli, tmp_path / "edges.jsonl", bad, reference, good)
    assert cli.json("history", "u-early")["entries"][0]["valid_from"] == "0001-01-02T00:00:00Z"
    assert cli.json("history", "u-late")["entries"][0]["valid_from"] == "9999-12-30T23:59:59.999Z"


def test_huge_integers_and_deep_nesting_are_dead_lettered(
    cli: Cli, tmp_path: Path, reference
) -> None:
    huge_id = dumps(signup(30, "u-9")).replace(f'"{eid(30)}"', "9" * 5000)
    bad: list[Bad] = [
        (huge_id, "field 'event_id' must be a string, got integer"),
        ("[" * 100_000, "nested more than"),
        ('{"event_id": ' + "[" * 100_000, "nested more than"),
        (dumps(signup(31, "u-9", channel=[[["xiaohongshu-app"]]])), "field 'channel'"),
        (dumps(signup(32, "u-9", extra={"nested": True})), "field 'extra'"),
        ('{"user_id": "u-9", "x": ' + "-" + "1" * 5000 + "}", "missing field 'type'"),
    ]
    replay_mixed(cli, tmp_path / "numbers.jsonl", bad, reference)


def test_avro_timestamps_outside_years_1_to_9999_are_dead_lettered(
    cli: Cli, tmp_path: Path, reference
) -> None:
    """Any long is a timestamp-millis on the wire; one outside years 1-9999 is a dead letter
    naming its field, and the container goes on after it."""
    codec = AvroCodec()
    good = [event_from_json_line(line) for line in GOOD]
    records = [codec.to_record(e, r) for e, r in good]
    plain = [
        {**r, "occurred_at": _ms(r["occurred_at"]), "recorded_at": _ms(r["recorded_at"])}
        for r in records
    ]
    bad_time = {**plain[0], "event_id": eid(40), "occurred_at": 2**62}
    bad_record = {**plain[0], "event_id": eid(41), "recorded_at": -(2**62)}
    bad_date = {**plain[1], "event_id": eid(42)}
    bad_date["payload"] = (
        bad_date["payload"][0],
        {**bad_date["payload"][1], "birth_date": 2**31 - 1},
    )
    buf = io.BytesIO()
    fastavro.writer(
        buf, codec.plain_schema, [plain[0], bad_time, bad_record, bad_date, plain[1], plain[2]]
    )
    path = tmp_path / "times.avro"
    path.write_bytes(buf.getvalue())
    summary = cli.json("replay", str(path), expect=3)
    assert (summary["applied"], summary["dead_lettered"]) == (3, 3), summary
    reasons = {r.position: r.reason for r in _rows(cli.db, dead_letters)}
    assert reasons["times.avro#1"].startswith("occurred_at: ")
    assert reasons["times.avro#2"].startswith("recorded_at: ")
    assert reasons["times.avro#3"].startswith("birth_date: ")
    assert history_rows(cli.db) == reference(GOOD)
    again = cli.json("replay", str(path))
    assert (again["applied"], again["dead_lettered"]) == (0, 0)


def _ms(value: datetime | None) -> int | None:
    return None if value is None else to_millis(value)


# --- text no database can encode ----------------------------------------------------------


def test_lone_surrogates_and_bytes_that_are_not_utf8_are_dead_lettered(
    cli: Cli, tmp_path: Path, reference
) -> None:
    bad: list[Bad] = [
        (dumps(signup(50, "\ud800x")), "field 'user_id' contains a lone surrogate"),
        (dumps(signup(51, "u-9", channel="\udfff")), "field 'channel' contains a lone surrogate"),
        (dumps(signup(52, "u-9", phone="+86\ud83d")), "field 'phone' contains a lone surrogate"),
        (dumps(accepts(53, "u-1", tos_version="tos-\ud800")), "field 'tos_version'"),
        # Not even UTF-8: the bytes of a surrogate (CESU-8) and a stray continuation byte.
        (dumps(signup(54, "u-9")).encode().replace(b"u-9", b"u-\xed\xa0\x80"), "UTF-8"),
        (b"\xff" + dumps(signup(55, "u-9")).encode(), "UTF-8"),
    ]
    replay_mixed(cli, tmp_path / "surrogates.jsonl", bad, reference)
    raw = {r.position: r.raw for r in _rows(cli.db, dead_letters)}
    assert b'"user_id": "\\ud800x"' in raw["surrogates.jsonl:2"]  # kept as it came


def test_a_file_name_that_is_not_utf8_becomes_an_escaped_position(
    cli: Cli, tmp_path: Path, reference
) -> None:
    """A file name is input too: it becomes each dead letter's position."""
    name = os.fsdecode(b"events-\xff.jsonl")  # a lone surrogate in Python's spelling
    bad: list[Bad] = [(dumps(signup(56, "u-9", occurred_at="soon")), "occurred_at")]
    lines: list[str | bytes] = [GOOD[0], bad[0][0], *GOOD[1:]]
    path = write_lines(tmp_path / name, lines)
    summary = cli.json("replay", str(path), expect=3)
    assert (summary["applied"], summary["dead_lettered"]) == (3, 1)
    (row,) = _rows(cli.db, dead_letters)
    assert row.position == "events-\\udcff.jsonl:2"
    assert history_rows(cli.db) == reference(GOOD)


# --- text the store's columns cannot hold -------------------------------------------------


def test_nul_characters_and_values_over_the_column_sizes_are_dead_lettered(
    cli: Cli, tmp_path: Path, reference
) -> None:
    # At the limits exactly (in characters, multi-byte ones too) is valid on both stores.
    u200 = "用" * limits.USER_ID_CHARS
    good = [
        *GOOD,
        dumps(signup(60, u200, channel="渠" * limits.CHANNEL_CHARS)),
        dumps(accepts(61, u200)),
        # The longest locale the column holds: a private-use tag of 64 characters.
        dumps(signup(58, "u-8", locale="en-x-" + "-".join(["abcdefgh"] * 6) + "-abcde")),
        dumps(verified(59, "u-8", at="2026-01-11T00:00:00Z")),
    ]
    bad: list[Bad] = [
        (dumps(signup(62, "u-\x009")), "field 'user_id' contains a NUL character"),
        (dumps(signup(63, "u-9", channel="app\x00")), "field 'channel' contains a NUL character"),
        (dumps(signup(64, "u" * 201)), "field 'user_id' is 201 characters, over the limit of 200"),
        (
            dumps(signup(65, "u-9", channel="c" * 101)),
            "field 'channel' is 101 characters, over the limit of 100",
        ),
        (dumps(accepts(66, "u-1", tos_version="t" * 101)), "field 'tos_version' is 101"),
        (dumps(signup(67, "u-9", phone="+86" + "1" * 200)), "field 'phone' is 203 characters"),
        (dumps({**signup(68, "u-9"), "type": "SignedUp" * 10}), "field 'type' is 80 characters"),
        (
            dumps(
                {
                    **signup(69, "u-9"),
                    "type": "Relocated",
                    "country": "CNN",
                    "evidence": "id_verified",
                }
            ),
            "country 'CNN' is not an ISO 3166-1 alpha-2 code",
        ),
        (
            dumps(
                {**signup(70, "u-9"), "type": "Relocated", "country": "CN", "evidence": "x" * 21}
            ),
            "evidence 'xxxxxxxxxxxxxxxxxxxxx' is not one of",
        ),
        (dumps(signup(71, "u-9", event_id="0" * 37)), "is not a UUID"),
        (
            dumps(signup(72, "u-9", locale="en-x-" + "-".join(["abcdefgh"] * 6) + "-abcdef")),
            "field 'locale' is 65 characters, over the limit of 64",
        ),
        (dumps(signup(73, "u-9", locale="zh-CN\x00")), "field 'locale' contains a NUL"),
        (dumps(signup(74, "u-9", locale="en_US")), "locale 'en_US' is not a BCP 47 language tag"),
        (dumps(verified(75, "u-9", country="CHN")), "document_country 'CHN' is not an ISO"),
        (dumps(verified(76, "u-9", kind="x" * 21)), "document_kind 'xxxxxxxxxxxxxxxxxxxxx' is not"),
        (dumps(verified(77, "u-9", kind="passport\x00")), "field 'document_kind' contains a NUL"),
    ]
    replay_mixed(cli, tmp_path / "columns.jsonl", bad, reference, good)
    assert cli.json("history", u200)["user_id"] == u200


# --- a huge value is quoted, never copied -------------------------------------------------


def test_a_megabyte_value_is_quoted_briefly_never_copied(
    cli: Cli, tmp_path: Path, reference
) -> None:
    mb = "x" * 1_000_000  # under the line limit: decoded, then refused for its content
    bad: list[Bad] = [
        (dumps(signup(80, "u-9", occurred_at=mb)), "occurred_at: not an ISO 8601 timestamp"),
        (dumps(signup(81, "u-9", recorded_at=mb)), "recorded_at: not an ISO 8601 timestamp"),
        (dumps(signup(82, "u-9", event_id=mb)), "event_id 'xxx"),
        (dumps(signup(83, mb)), "field 'user_id' is 1,000,000 characters"),
        (dumps(signup(84, "u-9", birth_date=mb)), "birth_date 'xxx"),
        (dumps({**signup(85, "u-9"), "type": mb}), "field 'type' is 1,000,000 characters"),
        (dumps(accepts(86, "u-1", tos_version="tos-" + mb[:90])), "unknown terms version"),
        (
            dumps(
                {**signup(87, "u-9"), "type": "Relocated", "country": mb, "evidence": "id_verified"}
            ),
            "country 'xxx",
        ),
        (dumps({**signup(88, "u-9"), mb[:100_000]: [1]}), "is a JSON array"),
        (dumps(signup(89, "u-9", locale=mb)), "field 'locale' is 1,000,000 characters"),
        (dumps(verified(90, "u-9", country=mb)), "document_country 'xxx"),
        (dumps(verified(91, "u-9", kind=mb)), "document_kind 'xxx"),
    ]
    summary = replay_mixed(cli, tmp_path / "megabyte.jsonl", bad, reference)
    assert len(json.dumps(summary)) < 10_000
    for row in _rows(cli.db, dead_letters):
        assert len(row.reason) <= 200, row.reason
        assert "x" * 100 not in row.reason
        assert row.raw_size == len(row.raw)  # the input itself is kept whole
    printed = cli.run(
        "replay",
        str(tmp_path / "megabyte.jsonl"),
        "--db",
        f"sqlite:///{tmp_path}/o.db",
        expect=3,
        db=False,
    )
    assert len(printed.stdout) + len(printed.stderr) < 10_000


# --- a line too long to hold --------------------------------------------------------------

def test_a_line_over_the_size_limit_is_streamed_and_dead_lettered(
    cli: Cli, tmp_path: Path, reference
) -> None:
    path = huge_line_file(tmp_path / "huge.jsonl")
    summary = cli.json("replay", str(path), expect=3)
    assert (summary["applied"], summary["dead_lettered"]) == (3, 1), summary
    (row,) = _rows(cli.db, dead_letters)
    assert row.position == "huge.jsonl:2"
    assert row.reason == f"line is {HUGE:,} bytes, over the limit of {LIMIT:,} bytes"
    assert row.raw.startswith(b'{"event_id": "') and len(row.raw) <= LIMIT + 1
    assert row.raw_size == HUGE  # the line's size, though only its start was kept
    assert history_rows(cli.db) == reference(GOOD)
    again = cli.json("replay", str(path))
    assert (again["applied"], again["dead_lettered"], again["already_applied"]) == (0, 0, 4)


_MEASURED = """
import atexit, resource, sys
atexit.register(lambda: print("MAXRSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                              file=sys.stderr))
sys.argv = ["ledger", *sys.argv[1:]]
from ledger.cli.main import main
main()
"""


def _max_rss_kib(path: Path, db: Path) -> int:
    result = subprocess.run(
        [sys.executable, "-c", _MEASURED, "replay", str(path), "--db", f"sqlite:///{db}", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    return int(result.stderr.rsplit("MAXRSS", 1)[1].split()[0])


def test_replaying_a_line_over_the_limit_keeps_memory_bounded(tmp_path: Path) -> None:
    """`ledger replay` of the 64 MiB line peaks at about what a file without it takes (a
    process holding the line would grow by its size at least)."""
    small = tmp_path / "small.jsonl"
    write_lines(small, [GOOD[0], "not json", *GOOD[1:]])
    baseline = _max_rss_kib(small, tmp_path / "a.db")
    huge = _max_rss_kib(huge_line_file(tmp_path / "huge.jsonl"), tmp_path / "b.db")
    assert huge - baseline < 24 * 1024, (baseline, huge)


# --- standard input: the same inputs, the same outcome -------------------------------------


def test_hostile_lines_on_standard_input_are_dead_lettered_as_from_a_file(
    cli: Cli, tmp_path: Path, reference
) -> None:
    """`ledger replay - --format jsonl` spools standard input to a file and replays that:
    every hostile line is dead-lettered with the reason it has in a file, the valid ones
    are applied, the line over the size limit too is never held whole, and the same bytes
    again apply nothing."""
    path = huge_line_file(tmp_path / "huge.jsonl", 4 << 20)
    lines = path.read_bytes().splitlines(keepends=True)
    data = b"".join(lines[:2]) + write_lines(tmp_path / "bad.jsonl", PUBLISH_BAD).read_bytes()
    data += b"".join(lines[2:])
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    replay = [str(Path(sys.executable).with_name("ledger")), "replay", "-", "--format", "jsonl"]

    def piped() -> tuple[int, dict[str, object]]:
        done = subprocess.run(
            [*replay, "--json", "--db", cli.db], input=data, capture_output=True, env=env
        )
        return done.returncode, json.loads(done.stdout)

    code, summary = piped()
    bad = len(PUBLISH_BAD) + 1
    assert (code, summary["applied"], summary["dead_lettered"]) == (3, len(GOOD), bad)
    piped_reasons = sorted((r.position, r.reason) for r in _rows(cli.db, dead_letters))
    assert {position.split(":")[0] for position, _ in piped_reasons} == {"stdin.jsonl"}
    assert history_rows(cli.db) == reference(GOOD)
    code, again = piped()
    assert (code, again["applied"], again["dead_lettered"]) == (0, 0, 0)
    # The same bytes as a file: the same reasons, at the same lines.
    other = Cli(f"sqlite:///{tmp_path / 'file.db'}")
    (tmp_path / "stdin.jsonl").write_bytes(data)
    other.run("replay", str(tmp_path / "stdin.jsonl"), expect=3)
    assert sorted((r.position, r.reason) for r in _rows(other.db, dead_letters)) == piped_reasons


# --- publish: the same inputs are reported, not sent --------------------------------------

@pytest.mark.kafka
def test_publish_reports_hostile_lines_and_sends_only_valid_events(
    kafka_broker, kafka_topic: str, sqlite_cli: Cli, tmp_path: Path
) -> None:
    path = tmp_path / "hostile.jsonl"
    write_lines(path, [GOOD[0], *PUBLISH_BAD, *GOOD[1:]])
    _huge = huge_line_file(tmp_path / "huge.jsonl", 4 << 20)
    bootstrap = ["--bootstrap", kafka_broker.bootstrap, "--topic", kafka_topic]
    result = sqlite_cli.json("publish", str(path), str(_huge), *bootstrap, db=False, expect=3)
    assert (result["sent"], result["invalid"]) == (6, len(PUBLISH_BAD) + 1), result
    assert result["invalid_samples"][0].startswith("hostile.jsonl:2: occurred_at")
    # What reached the topic is exactly the valid events, each once.
    replayed = sqlite_cli.json("replay", "--from-kafka", "--from-beginning", *bootstrap, expect=0)
    assert (replayed["applied"], replayed["duplicates"], replayed["dead_lettered"]) == (3, 3, 0)


