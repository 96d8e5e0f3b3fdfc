"""Bad input of every kind is dead-lettered with its reason and position; nothing valid is
lost and the replay keeps going."""

from __future__ import annotations

import io
import json
from pathlib import Path

import sqlalchemy as sa

from ledger.codecs.avro import AvroCodec
from ledger.codecs.jsonl import event_from_json_line
from ledger.store.schema import dead_letters, events
from tests.factories import PHONE_HK, relocation, signup, terms_accepted
from tests.support import Cli, eid

GOOD = [
    signup(1, "u-1"),
    signup(2, "u-2", at="2026-01-11T09:00:00Z", phone=PHONE_HK, channel="rednote-app"),
    terms_accepted(3, "u-1"),
]
BAD_LINES = {
    "bad json": '{"event_id": "x", ',
    "wrong type": json.dumps({**GOOD[0], "event_id": eid(90), "phone": 8613912345678}),
    "unknown event type": json.dumps(
        {
            "event_id": eid(91),
            "user_id": "u-1",
            "occurred_at": "2026-01-12T00:00:00Z",
            "type": "Deleted",
        }
    ),
    "unknown tos version": json.dumps({**GOOD[2], "event_id": eid(92), "tos_version": "tos-2099"}),
    "what-if only version": json.dumps(
        {**GOOD[2], "event_id": eid(93), "tos_version": "wechat-style"}
    ),
    "invalid country": json.dumps(relocation(94, "u-1", at="2026-02-01T00:00:00Z", country="XX")),
    "bad timestamp": json.dumps({**GOOD[0], "event_id": eid(95), "occurred_at": "yesterday"}),
    "not a uuid": json.dumps({**GOOD[0], "event_id": "abc"}),
}
EXPECTED_REASON = {
    "bad json": "not valid JSON",
    "wrong type": "field 'phone' must be a string",
    "unknown event type": "unknown event type 'Deleted'",
    "unknown tos version": "unknown terms version 'tos-2099'",
    "what-if only version": "what-if comparison only",
    "invalid country": "country 'XX' is not an ISO 3166-1 alpha-2 code",
    "bad timestamp": "occurred_at",
    "not a uuid": "is not a UUID",
}


def _rows(url: str, table: sa.Table) -> list[sa.Row]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = list(conn.execute(sa.select(table)))
    engine.dispose()
    return rows


def test_every_kind_of_bad_line_is_dead_lettered(cli: Cli, tmp_path: Path) -> None:
    lines = [json.dumps(GOOD[0]), *BAD_LINES.values(), json.dumps(GOOD[1]), json.dumps(GOOD[2])]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    summary = cli.json("replay", str(path), expect=3)
    assert (summary["applied"], summary["dead_lettered"]) == (3, len(BAD_LINES))
    dead = {r.position: r for r in _rows(cli.db, dead_letters)}
    for line_no, kind in enumerate(BAD_LINES, start=2):
        row = dead[f"mixed.jsonl:{line_no}"]
        assert EXPECTED_REASON[kind] in row.reason, (kind, row.reason)
        assert row.raw.decode() == BAD_LINES[kind]
    assert {r.event_id for r in _rows(cli.db, events)} == {eid(1), eid(2), eid(3)}
    assert cli.json("current", "u-1", "--at", "2026-05-01")["rule"] == "R3"


def test_truncated_avro_keeps_what_came_before(cli: Cli, tmp_path: Path) -> None:
    codec = AvroCodec()
    buf = io.BytesIO()
    # Several blocks, so the truncation falls after whole, readable ones.
    items = [event_from_json_line(json.dumps(e)) for e in GOOD]
    import fastavro

    fastavro.writer(buf, codec.schema, (codec.to_record(e, r) for e, r in items), sync_interval=1)
    data = buf.getvalue()
    path = tmp_path / "cut.avro"
    path.write_bytes(data[: len(data) - 30])
    summary = cli.json("replay", str(path), expect=3)
    assert summary["dead_lettered"] == 1
    assert summary["applied"] == 2
    (row,) = _rows(cli.db, dead_letters)
    assert "truncated or corrupt Avro container" in row.reason
    assert row.position == "cut.avro#2"


def test_missing_file_and_unknown_suffix_fail_cleanly(sqlite_cli: Cli, tmp_path: Path) -> None:
    missing = sqlite_cli.run("replay", str(tmp_path / "nope.jsonl"), expect=1)
    assert "nope.jsonl: no such file" in missing.stderr
    odd = tmp_path / "events.csv"
    odd.write_text("x")
    assert "unknown file type '.csv'" in sqlite_cli.run("replay", str(odd), expect=1).stderr
