"""Every command follows one exit-code table (ledger.errors, README): 0 success, 1 an
error, 2 a usage error, 3 finished with dead letters. One test per command; every error is
one line on stderr starting `ledger: error:`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ledger.cli.main import app
from tests.factories import signup
from tests.support import Cli, write_jsonl
from tools.common import LEDGER

NO_BROKER = "127.0.0.1:1"  # nothing listens on port 1
# An unreachable cluster is given up after 1 s instead of 10.
ENV = {
    "LEDGER_BOOTSTRAP": "",
    "LEDGER_DB": "",
    "LEDGER_TOPIC": "",
    "LEDGER_KAFKA_BOOTSTRAP_TIMEOUT_MS": "1000",
}


def run(*args: str, code: int) -> Any:
    result = CliRunner().invoke(app, list(args), env=ENV, catch_exceptions=False)
    assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr)
    if code in (1, 2) and result.stderr.startswith("ledger: error:"):
        assert result.stderr.count("\n") == 1, result.stderr
    return result


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def events(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "ok.jsonl", [signup(1, "u-1")])


@pytest.fixture
def bad_events(tmp_path: Path) -> Path:
    path = write_jsonl(tmp_path / "bad.jsonl", [signup(2, "u-2")])
    path.write_text(path.read_text() + "{not json\n")
    return path


def test_generate(tmp_path: Path) -> None:
    run("generate", "--users", "3", "-o", str(tmp_path / "g.jsonl"), code=0)
    assert "unknown file type" in run("generate", "-o", str(tmp_path / "g.csv"), code=2).stderr
    run("generate", "--users", "0", "-o", str(tmp_path / "g.jsonl"), code=2)
    run("generate", "-o", str(tmp_path / "no" / "such" / "dir.jsonl"), code=1)


def test_replay(db: str, events: Path, bad_events: Path, tmp_path: Path) -> None:
    run("replay", str(events), "--db", db, code=0)
    run("replay", str(bad_events), "--db", db, code=3)
    assert "no such file" in run("replay", str(tmp_path / "nope.jsonl"), "--db", db, code=1).stderr
    assert "not neither" in run("replay", "--db", db, code=2).stderr
    assert "not both" in run("replay", str(events), "--from-kafka", "--db", db, code=2).stderr
    run("replay", str(events), "--from-time", "2026-01-01", "--db", db, code=2)
    run("replay", str(events), "--reset-positions", "--db", db, code=2)
    for workers in ("-1", "1000", "two", ""):
        run("replay", str(events), "--workers", workers, "--db", db, code=2)
    run("replay", "--from-kafka", "--from-offset", "x", "--bootstrap", NO_BROKER, code=2)
    assert "pass --bootstrap" in run("replay", "--from-kafka", "--db", db, code=2).stderr
    gone = run("replay", "--from-kafka", "--bootstrap", NO_BROKER, "--db", db, code=1)
    assert "cannot reach Kafka" in gone.stderr


def test_standard_input_and_output_need_a_format(db: str, events: Path, tmp_path: Path) -> None:
    """`-` names standard input or output, which has no suffix to tell its format by."""
    for args, says in (
        (("generate", "-o", "-"), "give --format jsonl or --format avro"),
        (("generate", "-o", "-", "--format", "csv"), "--format 'csv': expected jsonl or avro"),
        (("generate", "-o", "-", "--format", ""), "--format '': expected jsonl or avro"),
        (("generate", "-o", "-", "--format", "jsonl", "--json"), "give -o FILE with it"),
        (("generate", "-o", str(tmp_path / "g.jsonl"), "--format", "avro"), "the file name says"),
        (("replay", "-", "--db", db), "give --format jsonl or --format avro"),
        (("replay", "-", "-", "--format", "jsonl", "--db", db), "can be read only once"),
        (("replay", str(events), "--format", "jsonl", "--db", db), "format of standard input"),
        (("replay", "--from-kafka", "--format", "avro", "--bootstrap", NO_BROKER), "a topic"),
        (("publish", "-", "--bootstrap", NO_BROKER), "give --format jsonl or --format avro"),
        (("export", "-o", "-", "--json", "--bootstrap", NO_BROKER), "give -o FILE.avro"),
    ):
        assert says in run(*args, code=2).stderr, args
    assert (
        "nope.jsonl: no such file"
        in run(
            "replay", str(tmp_path / "nope.jsonl"), "-", "--format", "jsonl", "--db", db, code=1
        ).stderr
    )  # the files are checked before standard input is read
    assert not (tmp_path / "g.jsonl").exists()


def test_current(db: str, events: Path) -> None:
    run("replay", str(events), "--db", db, code=0)
    run("current", "u-1", "--at", "2026-02-01", "--db", db, code=0)
    assert "unknown user" in run("current", "u-404", "--db", db, code=1).stderr
    assert "--at 'soon'" in run("current", "u-1", "--at", "soon", "--db", db, code=2).stderr


def test_history(db: str, events: Path) -> None:
    run("replay", str(events), "--db", db, code=0)
    run("history", "u-1", "--all", "--db", db, code=0)
    run("history", "u-404", "--db", db, code=1)
    run("history", "u-1", "--believed-at", "yesterday", "--db", db, code=2)
    run("history", "--db", db, code=2)  # no user


def test_explain(db: str, events: Path) -> None:
    run("replay", str(events), "--db", db, code=0)
    run("explain", "u-1", "--db", db, code=0)
    run("explain", "u-404", "--db", db, code=1)
    run("explain", "u-1", "--at", "2026-13-01", "--db", db, code=2)


def test_db_upgrade(db: str, tmp_path: Path) -> None:
    run("db", "upgrade", "--db", db, code=0)
    run("db", "upgrade", "--db", f"sqlite:///{tmp_path}/no/dir/x.db", code=1)
    run("db", "upgrade", "--db", "not-a-url", code=1)
    run("db", "upgrade", "--no-such-option", code=2)


def test_publish(events: Path, tmp_path: Path) -> None:
    assert "pass --bootstrap" in run("publish", str(events), code=2).stderr
    run("publish", str(tmp_path / "nope.jsonl"), "--bootstrap", NO_BROKER, code=1)
    gone = run("publish", str(events), "--bootstrap", NO_BROKER, code=1)
    assert "cannot reach Kafka" in gone.stderr


def test_export(tmp_path: Path) -> None:
    run("export", "-o", str(tmp_path / "x.avro"), code=2)
    run("export", "-o", str(tmp_path / "x.jsonl"), "--bootstrap", NO_BROKER, code=2)
    run("export", "-o", str(tmp_path / "x.avro"), "--bootstrap", NO_BROKER, code=1)


def test_consume(db: str) -> None:
    assert "pass --bootstrap" in run("consume", "--db", db, code=2).stderr
    run("consume", "--bootstrap", NO_BROKER, "--allow-dev-key", "--db", db, code=1)
    run("consume", "--batch-size", "0", "--db", db, code=2)
    run("consume", "--metrics-port", "70000", "--allow-dev-key", "--db", db, code=2)
    for workers in ("-1", "1000", "two", ""):
        run("consume", "--workers", workers, "--allow-dev-key", "--db", db, code=2)
    for hostile in ("xml", "", "JSON", "json\x1b[2J"):
        refused = run("consume", "--log-format", hostile, "--db", db, code=2)
        assert refused.stderr.startswith("ledger: error: --log-format")
        assert "\x1b" not in refused.stderr


def test_changefeed(db: str) -> None:
    assert "pass --bootstrap" in run("changefeed", "--db", db, code=2).stderr
    gone = run("changefeed", "--bootstrap", NO_BROKER, "--db", db, code=1)
    assert "cannot reach Kafka" in gone.stderr
    for page in ("0", "-1", "10001", "many", ""):
        run("changefeed", "--page-size", page, "--bootstrap", NO_BROKER, "--db", db, code=2)
    for partitions in ("0", "10001", "six", ""):
        run("changefeed", "--partitions", partitions, "--bootstrap", NO_BROKER, code=2)
    run("changefeed", "--metrics-port", "70000", "--bootstrap", NO_BROKER, code=2)
    for hostile in ("", "two words", "a/b", "x" * 250, ".", "..", "topic\x1b[2J", "é"):
        for flag in ("--topic", "--current-topic"):
            refused = run("changefeed", flag, hostile, "--bootstrap", NO_BROKER, code=2)
            assert "is not a Kafka topic name" in refused.stderr
            assert "\x1b" not in refused.stderr
    same = run(
        "changefeed", "--topic", "t", "--current-topic", "t", "--bootstrap", NO_BROKER, code=2
    )
    assert "must differ" in same.stderr
    for hostile in ("xml", "", "JSON"):
        run("changefeed", "--log-format", hostile, "--db", db, code=2)


def test_consume_changefeed_topics_are_checked_before_anything_starts(db: str) -> None:
    env = {**ENV, "LEDGER_CHANGES_TOPIC": "no spaces please"}
    result = CliRunner().invoke(
        app,
        ["consume", "--changefeed", "--bootstrap", NO_BROKER, "--allow-dev-key", "--db", db],
        env=env,
        catch_exceptions=False,
    )
    assert result.exit_code == 2, result.stderr
    assert "LEDGER_CHANGES_TOPIC" in result.stderr


def test_serve(db: str, tmp_path: Path) -> None:
    """Only what fails before the server runs (the server itself: test_http_api.py); as a
    process: serve holds SIGTERM and SIGINT from its start."""

    def serve(*args: str, code: int) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        done = subprocess.run(
            [LEDGER, "serve", *args], capture_output=True, text=True, env=env, timeout=60
        )
        assert done.returncode == code, (args, done.stderr)
        assert done.stderr.splitlines()[-1].startswith("ledger: error:")
        return done

    for hostile in ("xml", "", "text "):
        refused = serve("--log-format", hostile, "--db", db, code=2)
        assert refused.stderr.startswith("ledger: error: --log-format")
        assert refused.stderr.count("\n") == 1
    assert "LEDGER_PHONE_KEY is not set" in serve("--db", db, code=2).stderr
    limits = [("--max-connections", v) for v in ("0", "-1", "65537", "many", "")]
    limits += [("--head-timeout", v) for v in ("0", "-2", "3601", "nan", "inf", "soon", "")]
    for flag, value in limits:  # refused by the option's own range, before anything starts
        refused = run("serve", flag, value, "--allow-dev-key", "--db", db, code=2)
        assert flag in refused.stderr
    missing = tmp_path / "none.db"
    result = serve("--allow-dev-key", "--db", f"sqlite:///{missing}", code=1)
    assert "no ledger database" in result.stderr and not missing.exists()


def test_topics_create() -> None:
    run("topics", "create", code=2)
    run("topics", "create", "--bootstrap", NO_BROKER, "--timeout", "1", code=1)
    run("topics", "create", "--partitions", "0", "--bootstrap", NO_BROKER, code=2)


def test_broker(tmp_path: Path) -> None:
    state = ["--state-dir", str(tmp_path)]
    assert json.loads(run("broker", "status", "--json", *state, code=0).stdout) == []
    run("broker", "stop", *state, code=0)  # nothing runs: not an error
    run("broker", "start", "--port", "0", *state, code=2)
    for port in (5, 6):
        (tmp_path / f"broker-{port}.pid").write_text(json.dumps({"pid": 999_999_999, "port": port}))
    assert "several brokers" in run("broker", "stop", *state, code=1).stderr


@pytest.mark.kafka
def test_publish_and_export_succeed_or_report_invalid_lines(
    kafka_broker: Any, kafka_topic: str, events: Path, bad_events: Path, tmp_path: Path
) -> None:
    kafka = ["--bootstrap", kafka_broker.bootstrap, "--topic", kafka_topic]
    run("publish", str(events), *kafka, code=0)
    run("publish", str(bad_events), *kafka, code=3)
    run("export", "-o", str(tmp_path / "out.avro"), *kafka, code=0)


def test_bench(tmp_path: Path) -> None:
    # Refused before anything is generated or started.
    run("bench", "--users", "0", "--work", str(tmp_path), code=2)
    run("bench", "--repeat", "0", "--work", str(tmp_path), code=2)
    run("bench", "--workers", "0", "--work", str(tmp_path), code=2)
    run("bench", "--scale", "lots", "--work", str(tmp_path), code=2)
    run("bench", "--scale", "10", "--work", str(tmp_path), code=2)
    assert not any(tmp_path.iterdir())


def test_verify(db: str, events: Path, tmp_path: Path) -> None:
    run("replay", str(events), "--db", db, code=0)
    run("verify", "--db", db, code=0)
    missing = tmp_path / "nope.json"
    assert "nope.json" in run("verify", "--digest", str(missing), "--db", db, code=1).stderr
    run("verify", "--db", f"sqlite:///{tmp_path}/absent.db", code=1)
    run("verify", "--no-such-option", code=2)


def test_digest(db: str, events: Path, tmp_path: Path) -> None:
    run("replay", str(events), "--db", db, code=0)
    out = tmp_path / "digest.json"
    run("digest", "-o", str(out), "--db", db, code=0)
    assert json.loads(out.read_text())["events"] == 1
    run("digest", "-o", str(tmp_path / "no" / "dir" / "d.json"), "--db", db, code=1)
    run("digest", "--bogus", code=2)


def test_digest_list_and_path(db: str, events: Path, tmp_path: Path) -> None:
    run("replay", str(events), "--db", db, code=0)
    run("digest", "list", "--db", db, code=0)  # none recorded yet: said, not an error
    assert "no digest is recorded" in run("digest", "path", "u-1", "--db", db, code=1).stderr
    run("digest", "-o", str(tmp_path / "d.json"), "--db", db, code=0)
    assert [
        d["id"] for d in json.loads(run("digest", "list", "--json", "--db", db, code=0).stdout)
    ] == [1]
    proof = json.loads(run("digest", "path", "u-1", "--json", "--db", db, code=0).stdout)
    assert proof["leaf_index"] == 0 and proof["tree_size"] == 1 and proof["siblings"] == []
    # Hostile users and ids: one line each, the user id quoted as data.
    for user in ("u-2", "", "\x1b[31mred", "a\nb", "x" * 10_000, "u-1 ", "U-1"):
        stderr = run("digest", "path", user, "--db", db, code=1).stderr
        assert "has no leaf" in stderr and "\x1b" not in stderr, stderr
    assert (
        "no digest #7"
        in run("digest", "path", "u-1", "--digest-id", "7", "--db", db, code=1).stderr
    )
    run("digest", "path", "u-1", "--digest-id", "0", "--db", db, code=2)
    run("digest", "path", "u-1", "--digest-id", "x", "--db", db, code=2)
    run("digest", "path", "--db", db, code=2)
    run("digest", "path", "u-1", "--bogus", code=2)
    # The digest's own options belong to it, not to its subcommands.
    run("digest", "--json", "list", "--db", db, code=2)
    run("digest", "list", "--db", f"sqlite:///{tmp_path}/absent.db", code=1)
    # A recorded document edited into something that is not a digest: one line.
    import sqlite3

    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE digests SET document = '{not json'")
    assert "not a digest" in run("digest", "path", "u-1", "--db", db, code=1).stderr
    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE digests SET document = '{}', block_size = 0")
    run("digest", "path", "u-1", "--db", db, code=1)


def test_decisions_export(db: str, events: Path, tmp_path: Path) -> None:
    run("replay", str(events), "--db", db, code=0)
    out = tmp_path / "decisions.jsonl"
    run("decisions", "export", "-o", str(out), "--db", db, code=0)
    assert len(out.read_text().splitlines()) >= 1
    run("decisions", "export", "-o", str(out), "--since", "soon", "--db", db, code=2)
    run("decisions", "export", "--db", db, code=2)  # no -o


def test_changes(db: str, events: Path, tmp_path: Path) -> None:
    run("replay", str(events), "--db", db, code=0)
    [record] = [json.loads(line) for line in run("changes", "--db", db, code=0).stdout.splitlines()]
    assert record["user_id"] == "u-1"
    assert run("changes", "--after", str(record["seq"]), "--db", db, code=0).stdout == ""
    # Hostile values: one line each, naming the option, the value spelled out.
    for option, value in (
        ("--after", "-1"),
        ("--after", "ten"),
        ("--after", ""),
        ("--after", "1.5"),
        ("--after", " 1"),
        ("--after", "1_000"),
        ("--after", "\u0663"),  # a digit of another script, which int() would take
        ("--after", str(2**63)),
        ("--after", "9" * 5000),
        ("--after", "\x1b[2J[bold red]x"),
        ("--limit", "0"),
        ("--limit", "-5"),
        ("--limit", "10001"),
        ("--limit", "many"),
        ("--limit", ""),
    ):
        refused = run("changes", option, value, "--db", db, code=2)
        assert refused.stderr.startswith(f"ledger: error: {option} "), (option, value)
        assert "\x1b" not in refused.stderr and not refused.stdout
    run("changes", "--after", "--db", db, code=2)  # --after without its value
    run("changes", "--bogus", "--db", db, code=2)
    gone = run("changes", "--db", "postgresql+psycopg://nobody@127.0.0.1:1/none", code=1)
    assert gone.stderr.startswith("ledger: error:")
    run("db", "upgrade", "--db", f"sqlite:///{tmp_path / 'empty.db'}", code=0)
    empty = run("changes", "--json", "--db", f"sqlite:///{tmp_path / 'empty.db'}", code=0)
    assert json.loads(empty.stdout) == {"changes": [], "next_after": 0}


def test_schema_check(tmp_path: Path) -> None:
    assert "compatible" in run("schema", "check", code=0).stdout
    # The shipped version 2 adds a type, which version 1 cannot read: forward fails.
    failed = run("schema", "check", "--mode", "full", "--transitive", code=1)
    assert failed.stderr.startswith("ledger: error: the event schemas are not compatible")
    assert json.loads(run("schema", "check", "--json", code=0).stdout)["compatible"] is True
    run("schema", "check", "--mode", "sideways", code=2)
    run("schema", "check", "--schemas", str(tmp_path), code=2)  # no AccountEvent.avsc
    # Whatever the files hold, one line and exit 1: not JSON, JSON of another shape, a
    # type Avro does not have, a payload type without its file.
    for text in (
        "{not json",
        "[]",
        '{"fields": 7}',
        '{"type": "record", "name": "AccountEvent", "fields": [{"name": "x", "type": "nope"}]}',
        '{"type": "record", "name": "AccountEvent",'
        ' "fields": [{"name": "payload", "type": ["ledger.events.Gone"]}]}',
        "[" * 100_000,
    ):
        (tmp_path / "AccountEvent.avsc").write_text(text)
        failed = run("schema", "check", "--schemas", str(tmp_path), code=1)
        assert failed.stderr.startswith("ledger: error: cannot read the schemas in ")


def test_version() -> None:
    from importlib.metadata import version

    shown = run("--version", code=0).stdout
    assert shown.startswith(f"jurisdiction-ledger {version('jurisdiction-ledger')} ")
    assert "writes event schema version 3" in shown
    script = subprocess.run([LEDGER, "--version"], capture_output=True, text=True, check=True)
    assert script.stdout == shown


def test_replay_with_hostile_policy_directories(db: str, events: Path, tmp_path: Path) -> None:
    """A --policies that is missing, an empty directory, or not TOML (an event file given by
    mistake) is refused before anything is applied; the same events then apply with the
    shipped policies."""
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.toml").write_bytes(b"version = [\x00\n")
    for policies, code in ((tmp_path / "nope", 1), (empty, 1), (bad, 1), (events, 1)):
        args = ["replay", str(events), "--policies", str(policies), "--db", db, "--json"]
        result = CliRunner().invoke(app, args, env=ENV, catch_exceptions=False)
        # Invalid policy files: one line, then one indented line per problem.
        assert result.exit_code == code and not result.stdout, (policies, result.stderr)
    assert (
        json.loads(run("replay", str(events), "--db", db, "--json", code=0).stdout)["applied"] == 1
    )


def test_verify_refuses_garbage_digests_in_one_line(db: str, events: Path, tmp_path: Path) -> None:
    run("replay", str(events), "--db", db, code=0)
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(bytes(range(256)) * 8)
    partial = tmp_path / "partial.json"
    partial.write_text('{"root": 1}')
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 30_000 + "]" * 30_000)
    huge = tmp_path / "huge.json"
    huge.write_text(" " * (1 << 20) + "{}")
    for path in (garbage, partial, deep, huge):
        assert "ledger: error:" in run("verify", "--digest", str(path), "--db", db, code=1).stderr
    # A well-formed digest naming a hostile chain encoding: refused in one clean line.
    taken = tmp_path / "taken.json"
    run("digest", "-o", str(taken), "--db", db, code=0)
    for hostile in ("\x1b[2J" * 50, 2**70, 1):
        named = tmp_path / "named.json"
        named.write_text(json.dumps({**json.loads(taken.read_text()), "chain_encoding": hostile}))
        stderr = run("verify", "--digest", str(named), "--db", db, code=1).stderr
        assert "chain_encoding" in stderr and "\x1b" not in stderr and stderr.count("\n") == 1


def test_erase(db: str, events: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run("replay", str(events), "--db", db, code=0)
    # No terminal and no --yes: refused before anything is opened or changed.
    stderr = run("erase", "u-1", "--request-id", "R1", "--db", db, code=2).stderr
    assert "--yes" in stderr
    # Hostile request ids and users: one line each, nothing erased.
    for rid in ("", "x" * 101, "a\x1bb", "a\nb", "\x00"):
        stderr = run("erase", "u-1", "--request-id", rid, "--yes", "--db", db, code=2).stderr
        assert "--request-id" in stderr and "\x1b" not in stderr, stderr
    run("erase", "u-1", "--request-id", "R1", "--reason", "x" * 501, "--yes", "--db", db, code=2)
    run("erase", "u-1", "--request-id", "R1", "--reason", "", "--yes", "--db", db, code=2)
    for user in ("u-2", "\x1b[31mred", "a\nb"):
        stderr = run("erase", user, "--request-id", "R1", "--yes", "--db", db, code=1).stderr
        assert "unknown user" in stderr and "\x1b" not in stderr, stderr
    run("erase", "x" * 201, "--request-id", "R1", "--yes", "--db", db, code=2)
    run("erase", "", "--request-id", "R1", "--yes", "--db", db, code=2)
    # Usage: no request id, an unknown option, --bootstrap with --db, --topic alone.
    run("erase", "u-1", "--yes", "--db", db, code=2)
    run("erase", "u-1", "--request-id", "R1", "--bogus", code=2)
    args = ("erase", "u-1", "--request-id", "R1", "--yes")
    run(*args, "--db", db, "--bootstrap", NO_BROKER, code=2)
    run(*args, "--topic", "t", code=2)
    # A store that is not there is not created.
    missing = tmp_path / "none.db"
    run(*args, "--db", f"sqlite:///{missing}", code=1)
    assert not missing.exists()
    # An unreachable broker: one line.
    run(*args, "--bootstrap", NO_BROKER, code=1)
    # On a terminal it asks; declined, nothing changes.
    monkeypatch.setattr("ledger.cli.erase.interactive", lambda: True)
    declined = CliRunner().invoke(
        app, ["erase", "u-1", "--request-id", "R1", "--db", db], input="n\n", env=ENV
    )
    assert declined.exit_code == 1 and "nothing erased" in declined.stderr
    assert "erased" not in run("history", "u-1", "--db", db, code=0).stdout
    # Confirmed: erased, what was deleted and kept; again: erased already, exit 0.
    confirmed = CliRunner().invoke(
        app, ["erase", "u-1", "--request-id", "R1", "--json", "--db", db], input="y\n", env=ENV
    )
    assert confirmed.exit_code == 0, confirmed.stderr
    report = json.loads(confirmed.stdout[confirmed.stdout.index("{") :])
    assert report["already_erased"] is False
    assert report["deleted"] == {"events": 1, "history_rows": 1, "dead_letters": 0}
    assert report["kept"] == {"event_links": 1, "history_rows": 0}
    again = json.loads(run(*args, "--json", "--db", db, code=0).stdout)
    assert again["already_erased"] is True and again["erased_at"] == report["erased_at"]
    assert "erased already, nothing changed" in run(*args, "--db", db, code=0).stdout
    # Readers answer the erased line; the subject export too, writing nothing.
    out = tmp_path / "u-1.json"
    answer = run("subject", "export", "u-1", "-o", str(out), "--db", db, code=0).stdout
    assert answer.startswith("u-1 erased at ") and not out.exists()


def test_subject_export_and_verify(db: str, events: Path, tmp_path: Path) -> None:
    run("replay", str(events), "--db", db, code=0)
    out = tmp_path / "u-1.json"
    summary = json.loads(
        run("subject", "export", "u-1", "-o", str(out), "--json", "--db", db, code=0).stdout
    )
    assert summary["fresh_digest"] is True and summary["signature"] == "none"
    assert os.stat(out).st_mode & 0o777 == 0o600
    # Unsigned (no LEDGER_AUDIT_KEY here): every other check holds, the signature fails.
    report = json.loads(run("subject", "verify", str(out), "--json", code=1).stdout)
    assert [c["check"] for c in report["checks"] if not c["ok"]] == ["signature"]
    assert "unsigned" in report["checks"][3]["detail"]
    # Hostile users: one line each, quoted as data.
    for user in ("u-2", "", "\x1b[31mred", "a\nb", "x" * 10_000):
        stderr = run("subject", "export", user, "-o", str(out), "--db", db, code=1).stderr
        assert "unknown user" in stderr and "\x1b" not in stderr, stderr
    # Usage: no -o, --json with standard output, an unknown option, no file to verify.
    run("subject", "export", "u-1", "--db", db, code=2)
    run("subject", "export", "u-1", "-o", "-", "--json", "--db", db, code=2)
    run("subject", "export", "u-1", "-o", str(out), "--bogus", code=2)
    run("subject", "verify", code=2)
    run("subject", "verify", str(out), "--bogus", code=2)
    run("subject", "export", "u-1", "-o", str(tmp_path / "no" / "dir.json"), "--db", db, code=1)
    # --digest: missing, garbage, and a digest the store did not record.
    run(
        "subject",
        "export",
        "u-1",
        "-o",
        str(out),
        "--digest",
        str(tmp_path / "none"),
        "--db",
        db,
        code=1,
    )
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(bytes(range(256)))
    run("subject", "export", "u-1", "-o", str(out), "--digest", str(garbage), "--db", db, code=1)
    stray = tmp_path / "stray.json"
    stray.write_text(json.dumps({"seq": 1, "root": "0" * 64}))
    stderr = run(
        "subject", "export", "u-1", "-o", str(out), "--digest", str(stray), "--db", db, code=1
    ).stderr
    assert "did not record" in stderr
    # Files that are not exports: one line, exit 1.
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 30_000 + "]" * 30_000)
    partial = tmp_path / "partial.json"
    partial.write_text(out.read_text()[:200])
    bigint = tmp_path / "bigint.json"
    bigint.write_text('{"format": ' + "9" * 5000 + "}")
    for bad in (garbage, deep, partial, bigint, tmp_path / "absent.json"):
        stderr = run("subject", "verify", str(bad), code=1).stderr
        assert stderr.startswith("ledger: error:"), stderr
    run("subject", "verify", str(out), "--public-key", str(garbage), code=1)
    run("subject", "verify", str(out), "--public-key", str(tmp_path / "absent.pem"), code=1)


# --- a store that is not there ------------------------------------------------------------

# Every command that only reads a store, with what else it needs.
READERS = [
    ("history", "u-1"),
    ("current", "u-1"),
    ("explain", "u-1"),
    ("timeline", "u-1", "-o", "{tmp}/u-1.svg"),
    ("dead-letters", "list"),
    ("dead-letters", "show", "1"),
    ("dead-letters", "export", "-o", "{tmp}/dead.jsonl"),
    ("decisions", "export", "-o", "{tmp}/decisions.jsonl"),
    ("changes",),
    ("changes", "--after", "5", "--limit", "10", "--json"),
    ("verify",),
    ("digest",),
    ("digest", "list"),
    ("digest", "path", "u-1"),
    ("subject", "export", "u-1", "-o", "{tmp}/u-1.json"),
    ("impact", "--only", "wechat-style"),
]


@pytest.mark.parametrize("args", READERS, ids=" ".join)
def test_a_command_that_reads_refuses_a_store_that_is_not_there(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    """Before, the user commands and the dead-letter commands created an empty database at a
    mistyped path and answered from it ("unknown user", "no unresolved dead letters")."""
    missing = tmp_path / "new.db"
    argv = [a.format(tmp=tmp_path) for a in args]
    result = run(*argv, "--db", f"sqlite:///{missing}", code=1)
    assert result.stderr == (
        f"ledger: error: no ledger database at sqlite:///{missing}: no such file {missing} "
        "(replay events into it first)\n"
    )
    assert not any(tmp_path.iterdir()), "nothing is created, the store nor an output"


WRITERS = [("db", "upgrade"), ("dead-letters", "purge", "--before", "2026-01-01")]


@pytest.mark.parametrize("args", WRITERS, ids=" ".join)
def test_a_command_that_writes_creates_the_store(args: tuple[str, ...], tmp_path: Path) -> None:
    store = tmp_path / "new.db"
    run(*args, "--db", f"sqlite:///{store}", code=0)
    assert store.is_file()
    run("dead-letters", "list", "--db", f"sqlite:///{store}", code=0)


# --- files a command writes ------------------------------------------------------------------

# Every command that writes a file the user names, with the suffix it wants.
WRITES_A_FILE = {
    "generate": (("generate", "--users", "2", "-o"), ".jsonl"),
    "timeline": (("timeline", "u-1", "-o"), ".svg"),
    "decisions export": (("decisions", "export", "-o"), ".jsonl"),
    "dead-letters export": (("dead-letters", "export", "-o"), ".jsonl"),
    "digest": (("digest", "-o"), ".json"),
    "export": (("export", "--bootstrap", NO_BROKER, "-o"), ".avro"),
}


@pytest.mark.parametrize("command", WRITES_A_FILE)
def test_an_output_path_that_cannot_be_written_is_named_in_one_line(
    command: str, db: str, events: Path, tmp_path: Path
) -> None:
    """Before: `[Errno 2] No such file or directory: '/nonexistent/d.jsonl.partial'`, the
    OS's message about a file the user never named. Now the path given, and what is wrong
    with it, before any work is done."""
    args, suffix = WRITES_A_FILE[command]
    store = ["--db", db] if command not in ("generate", "export") else []
    run("replay", str(events), "--db", db, code=0)
    before = sorted(tmp_path.iterdir())
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    taken = tmp_path / f"taken{suffix}"
    taken.mkdir()
    missing = tmp_path / "no" / "dir"
    for target, problem in (
        (missing / f"out{suffix}", f"directory {missing} does not exist"),
        (a_file / f"out{suffix}", f"{a_file} is not a directory"),
        (taken, "it is a directory"),
    ):
        result = run(*args, str(target), *store, code=1)
        assert result.stderr == f"ledger: error: cannot write {target}: {problem}\n"
    assert sorted(tmp_path.iterdir()) == sorted([*before, a_file, taken])


# --- errors about what a command reaches: Kafka and the database ------------------------


@pytest.mark.slow
def test_kafka_command_errors_are_one_line(sqlite_cli: Cli, tmp_path: Path) -> None:
    env_free = {k: v for k, v in os.environ.items() if k != "LEDGER_BOOTSTRAP"}
    result = subprocess.run(
        [LEDGER, "consume", "--db", sqlite_cli.db],
        env=env_free,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "pass --bootstrap" in result.stderr
    gone = sqlite_cli.run("replay", "--from-kafka", "--bootstrap", "127.0.0.1:1", expect=1)
    assert "cannot reach Kafka at 127.0.0.1:1" in gone.stderr
    both = sqlite_cli.run("replay", str(tmp_path / "x.jsonl"), "--from-kafka", expect=2)
    assert "not both" in both.stderr


def test_unreachable_database_is_one_line(sqlite_cli: Cli, tmp_path: Path) -> None:
    bad = Cli("postgresql+psycopg://nobody@127.0.0.1:1/none")
    result = bad.run("history", "u-1", expect=1)
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("ledger: error: cannot reach database")
    missing_dir = Cli(f"sqlite:///{tmp_path}/no/such/dir/ledger.db")
    assert "does not exist" in missing_dir.run("history", "u-1", expect=1).stderr
    assert "not a database URL" in Cli("nonsense").run("history", "u-1", expect=1).stderr
