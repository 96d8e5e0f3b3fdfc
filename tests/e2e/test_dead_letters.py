"""`ledger dead-letters`: list, show, export, purge, and retry after the cause is fixed, on
SQLite and PostgreSQL; plus every new option fed garbage."""

from __future__ import annotations

import base64
import json
import shutil
import stat
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ledger.resources import policies_dir
from ledger.store.schema import dead_letters, events
from tests.factories import avro, signup, terms_accepted
from tests.support import Cli, eid, events_with_origin, write_jsonl

HIDDEN_PHONE = "+8613900000001"  # only ever inside a dead letter's raw input


# An acceptance of `tos-2099`, which no shipped policy defines: a dead letter until the
# operator adds the policy (`fixed_policies`).
accepts = partial(terms_accepted, at="2026-04-10T09:00:00Z", version="tos-2099")


def fixed_policies(tmp_path: Path) -> Path:
    """The shipped policies plus the missing `tos-2099`: the operator's fix."""
    directory = tmp_path / "policies"
    directory.mkdir()
    for path in policies_dir().glob("*.toml"):
        shutil.copy(path, directory)
    (directory / "tos-2099.toml").write_text(
        'version = "tos-2099"\n'
        'effective_from = "2026-04-01T00:00:00Z"\n'
        "bindable = true\n"
        'title = "Terms of April 2026"\n\n'
        "[[rules]]\n"
        'id = "N1"\n'
        "when = []\n"
        'assign = "rednote-international"\n'
        'reason = "the April 2026 terms put every account under the international rulebook"\n'
    )
    return directory


def one_error_line(result: Any) -> str:
    assert result.stderr.startswith("ledger: error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return result.stderr


def rows(url: str, table: sa.Table) -> list[Any]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.select(table).order_by(*table.primary_key.columns)))
    finally:
        engine.dispose()


def insert_dead_letter(url: str, **values: Any) -> int:
    """A dead letter as the projector would have written it (for shapes a file replay cannot
    produce cheaply: a Kafka message, a raw input cut to the size limit)."""
    engine = sa.create_engine(url)
    row = {
        "source": "kafka:account-events",
        "position": "account-events[3]@17",
        "reason": "test",
        "raw_size": len(values.get("raw", b"")),
        "recorded_at": datetime(2026, 5, 1, tzinfo=UTC),
        "partition": 3,
        "offset": 17,
        **values,
    }
    try:
        with engine.begin() as conn:
            return conn.execute(dead_letters.insert().values(**row)).inserted_primary_key[0]
    finally:
        engine.dispose()


@pytest.fixture
def rejected(cli: Cli, tmp_path: Path) -> Path:
    """Three dead letters: an unknown terms version, a line that is not JSON, and a sign-up
    with a bad birth date whose raw input holds a phone number."""
    path = write_jsonl(
        tmp_path / "events.jsonl",
        [
            signup(1),
            accepts(2),
            signup(3, "u-3", phone=HIDDEN_PHONE, birth_date="someday"),
        ],
    )
    path.write_text(path.read_text() + "{not json\n")
    cli.run("replay", str(path), expect=3)
    return path


def test_list_filters_and_never_shows_raw_input(cli: Cli, rejected: Path) -> None:
    listed = cli.json("dead-letters", "list")
    assert listed["total"] == 3
    assert [d["position"] for d in listed["dead_letters"]] == [
        "events.jsonl:2",
        "events.jsonl:3",
        "events.jsonl:4",
    ]
    first = listed["dead_letters"][0]
    assert first["reason"].startswith("unknown terms version 'tos-2099'")
    assert (first["event_id"], first["user_id"], first["resolution"]) == (eid(2), "u-1", None)
    assert first["raw_size"] == len(json.dumps(accepts(2)))
    assert not any(k.startswith("raw_") and k != "raw_size" for k in first)
    human = cli.run("dead-letters", "list")
    assert "events.jsonl:3" in human.stdout and "unknown terms version" in human.stdout
    for shown in (human.stdout, json.dumps(listed)):
        assert HIDDEN_PHONE not in shown
    only = cli.json("dead-letters", "list", "--reason", "TERMS VERSION")
    assert [d["id"] for d in only["dead_letters"]] == [first["id"]]
    assert cli.json("dead-letters", "list", "--source", "file:")["total"] == 3
    assert cli.json("dead-letters", "list", "--source", "kafka:")["total"] == 0
    assert cli.json("dead-letters", "list", "--since", "2000-01-01")["total"] == 3
    assert cli.json("dead-letters", "list", "--since", "2999-01-01")["total"] == 0
    assert cli.json("dead-letters", "list", "--before", "2000-01-01")["total"] == 0
    limited = cli.json("dead-letters", "list", "--limit", "1")
    assert (limited["total"], len(limited["dead_letters"])) == (3, 1)
    assert "2 more" in cli.run("dead-letters", "list", "--limit", "1").stderr


def test_show_and_export_give_the_raw_input_and_say_so(
    cli: Cli, rejected: Path, tmp_path: Path
) -> None:
    lines = rejected.read_bytes().splitlines()
    listed = cli.json("dead-letters", "list")["dead_letters"]
    birthday = next(d for d in listed if d["position"] == "events.jsonl:3")
    shown = cli.run("dead-letters", "show", str(birthday["id"]))
    assert "raw input (may contain personal data)" in shown.stdout
    assert shown.stdout.rstrip().endswith(lines[2].decode())
    assert HIDDEN_PHONE in shown.stdout
    exact = cli.json("dead-letters", "show", f"#{birthday['id']}")
    assert base64.b64decode(exact["raw_base64"]) == lines[2]
    assert exact["raw_text"] == lines[2].decode()
    assert (exact["raw_truncated"], exact["raw_kept"]) == (False, len(lines[2]))
    help_text = cli.run("dead-letters", "show", "--help", db=False).stdout
    assert "RAW INPUT" in help_text and "personal data" in help_text

    out = tmp_path / "dead.jsonl"
    done = cli.json("dead-letters", "export", "-o", str(out))
    assert done["written"] == 3
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert [base64.b64decode(d["raw_base64"]) for d in exported] == lines[1:]
    assert [d["raw_text"] for d in exported] == [line.decode() for line in lines[1:]]
    assert {d["position"] for d in exported} == {d["position"] for d in listed}
    some = cli.json("dead-letters", "export", "-o", str(out), "--reason", "not valid JSON")
    assert some["written"] == 1
    assert "raw input" in cli.run("dead-letters", "export", "-o", str(out)).stdout


def test_purge_is_a_dry_run_without_yes(cli: Cli, rejected: Path) -> None:
    dry = cli.json("dead-letters", "purge", "--before", "2999-01-01")
    assert (dry["matched"], dry["unresolved"], dry["deleted"], dry["dry_run"]) == (3, 3, 0, True)
    assert "would delete 3" in cli.run("dead-letters", "purge", "--before", "2999-01-01").stdout
    assert cli.json("dead-letters", "list")["total"] == 3
    old = cli.json("dead-letters", "purge", "--before", "2000-01-01", "--yes")
    assert (old["matched"], old["deleted"]) == (0, 0)
    gone = cli.run("dead-letters", "purge", "--before", "2999-01-01", "--yes")
    assert "deleted 3 dead letters" in gone.stdout
    assert cli.json("dead-letters", "list", "--all")["total"] == 0


def test_retry_after_the_missing_policy_is_added(cli: Cli, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [signup(1), accepts(2)])
    cli.run("replay", str(path), expect=3)
    [original] = cli.json("dead-letters", "list")["dead_letters"]

    # Before the fix: dead-lettered again, and it says so.
    again = cli.run("dead-letters", "retry", expect=3)
    assert f"dead-lettered again as #{original['id'] + 1}" in again.stdout
    assert "1 dead-lettered again" in again.stdout
    assert "still dead-lettered" in again.stderr
    [second] = cli.json("dead-letters", "list")["dead_letters"]
    assert second["position"] == "events.jsonl:2"  # the original position travels along
    assert second["source"].startswith("redrive:")
    settled = cli.json("dead-letters", "list", "--all")["dead_letters"][0]
    assert settled["resolution"] == f"dead-lettered again as #{second['id']}"

    # After the fix: applied, at the original position, and resolved.
    policies = fixed_policies(tmp_path)
    fixed = cli.json("dead-letters", "retry", "--policies", str(policies))
    assert (fixed["applied"], fixed["dead_lettered_again"]) == (1, 0)
    assert fixed["results"][0]["id"] == second["id"]
    [event] = [r for r in events_with_origin(cli.db) if r.event_id == eid(2)]
    assert event.position == "events.jsonl:2"
    assert event.source == fixed["run"] and event.source.startswith("redrive:")
    resolved = cli.json("dead-letters", "list", "--all")["dead_letters"]
    assert [(d["id"], d["resolution"]) for d in resolved][-1] == (second["id"], "applied")
    assert all(d["resolved_at"] for d in resolved)
    assert cli.json("dead-letters", "list")["total"] == 0
    history = cli.json("history", "u-1")["entries"]
    assert history[-1]["policy"] == "tos-2099" and eid(2) in history[-1]["evidence"]

    # A second retry does nothing; naming a settled one only reports it.
    nothing = cli.run("dead-letters", "retry", "--policies", str(policies))
    assert "nothing to retry" in nothing.stdout
    named = cli.json("dead-letters", "retry", str(second["id"]), "--policies", str(policies))
    assert [r["outcome"] for r in named["results"]] == ["already-resolved"]
    assert len([r for r in rows(cli.db, events) if r.event_id == eid(2)]) == 1


def test_retry_marks_duplicates_and_chooses_by_reason(cli: Cli, tmp_path: Path) -> None:
    # The same rejected event in two files: two dead letters, one event.
    cli.run("replay", str(write_jsonl(tmp_path / "a.jsonl", [signup(1), accepts(2)])), expect=3)
    cli.run("replay", str(write_jsonl(tmp_path / "b.jsonl", [accepts(2)])), expect=3)
    bad = tmp_path / "c.jsonl"
    bad.write_text("[1, 2]\n")
    cli.run("replay", str(bad), expect=3)
    chosen = cli.json(
        "dead-letters", "retry", "--reason", "tos-2099", "--policies", str(fixed_policies(tmp_path))
    )
    assert [(r["position"], r["outcome"]) for r in chosen["results"]] == [
        ("a.jsonl:2", "applied"),
        ("b.jsonl:1", "duplicate"),
    ]
    left = cli.json("dead-letters", "list")["dead_letters"]
    assert [d["position"] for d in left] == ["c.jsonl:1"]  # not chosen, not touched


def test_retry_decodes_kafka_messages_and_refuses_cut_raw_input(cli: Cli, tmp_path: Path) -> None:
    cli.run("replay", str(write_jsonl(tmp_path / "a.jsonl", [signup(1)])))
    message = insert_dead_letter(cli.db, raw=avro(accepts(5)))
    cut = insert_dead_letter(
        cli.db, source="file:x", position="big.jsonl:9", raw=b'{"event_id": ', raw_size=5 << 20
    )
    empty = insert_dead_letter(cli.db, source="file:y", position="old.avro#3", raw=b"")
    result = cli.run(
        "dead-letters", "retry", "--policies", str(fixed_policies(tmp_path)), "--json", expect=3
    )
    outcomes = {r["id"]: r for r in json.loads(result.stdout)["results"]}
    assert outcomes[message]["outcome"] == "applied"
    assert outcomes[cut]["outcome"] == "not-retryable"
    assert "cut to 13 of 5,242,880 bytes" in outcomes[cut]["detail"]
    assert outcomes[empty]["outcome"] == "not-retryable"
    [applied] = [r for r in events_with_origin(cli.db) if r.event_id == eid(5)]
    assert applied.position == "account-events[3]@17"
    still = {d["id"] for d in cli.json("dead-letters", "list")["dead_letters"]}
    assert still == {cut, empty}
    human = cli.run("dead-letters", "retry", str(cut), expect=3)
    assert "cut to 13 of 5,242,880 bytes" in human.stdout


def test_garbage_in_every_new_option(cli: Cli, tmp_path: Path) -> None:
    cli.run("replay", str(write_jsonl(tmp_path / "a.jsonl", [signup(1), accepts(2)])), expect=3)
    usage = [
        ("dead-letters", "list", "--since", "soon"),
        ("dead-letters", "list", "--since", "2026-13-01"),
        ("dead-letters", "list", "--before", "\x1b[2J"),
        ("dead-letters", "export", "-o", str(tmp_path / "x.jsonl"), "--since", "[/]"),
        ("dead-letters", "purge", "--before", "yesterday"),
        ("dead-letters", "purge", "--before", ""),
        ("dead-letters", "show", "abc"),
        ("dead-letters", "show", "1.5"),
        ("dead-letters", "show", "1" * 30),
        ("dead-letters", "show", "[bold]1"),
        ("dead-letters", "retry", "x"),
        ("dead-letters", "retry", "1", "--reason", "tos"),
        ("dead-letters", "export", "-o", str(tmp_path / "x.csv")),
    ]
    for args in usage:
        one_error_line(cli.run(*args, expect=2))
    assert "--since 'soon'" in cli.run("dead-letters", "list", "--since", "soon", expect=2).stderr
    assert "\x1b" not in cli.run("dead-letters", "list", "--before", "\x1b[2J", expect=2).stderr
    # Typer's own usage errors: exit 2, no traceback.
    for args in (
        ("dead-letters", "list", "--limit", "0"),
        ("dead-letters", "list", "--limit", "-1"),
        ("dead-letters", "list", "--limit", "many"),
        ("dead-letters", "purge"),
        ("dead-letters", "show"),
        ("dead-letters", "nonsense"),
    ):
        result = cli.run(*args, expect=2)
        assert "Traceback" not in result.stdout + result.stderr
    for args in (
        ("dead-letters", "show", "999"),
        ("dead-letters", "show", "0"),
        ("dead-letters", "retry", "1", "999"),
        ("dead-letters", "retry", "--policies", str(tmp_path / "nowhere")),
        ("dead-letters", "export", "-o", str(tmp_path / "no" / "dir" / "x.jsonl")),
    ):
        one_error_line(cli.run(*args, expect=1))
    assert "no dead letter #999" in cli.run("dead-letters", "show", "999", expect=1).stderr
    # The unknown id was found before anything was applied.
    assert cli.json("dead-letters", "list")["total"] == 1
    # Hostile filter text is data: LIKE wildcards match literally, markup is not parsed.
    for text in ("%", "_", "[/]", "[bold red]x[/bold red]", "\x1b[2J", "\\"):
        assert cli.json("dead-letters", "list", "--reason", text)["total"] == 0
        assert cli.json("dead-letters", "list", "--source", text)["total"] == 0
        assert (
            "no unresolved dead letters" in cli.run("dead-letters", "list", "--reason", text).stdout
        )
    assert cli.json("dead-letters", "list", "--reason", "'tos-2099'")["total"] == 1
