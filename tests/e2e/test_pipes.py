"""`-` for standard input and output, as kcat users expect: `ledger generate -o - --format F`
(and `export -o -`) writes the stream a file of that format holds, and `ledger replay -
--format F` (and `publish -`) reads one. Before, both failed with `unknown file type ''`.

Standard input is spooled to a temporary file first, so its source key is its content's
hash as for a file: the same bytes applied twice, from a pipe or from a file, apply once.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ledger.codecs.avro import AvroCodec
from tests.factories import signup
from tests.support import Cli
from tools.common import LEDGER

FORMATS = ["jsonl", "avro"]


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    spool = tmp / "spool"
    spool.mkdir(exist_ok=True)
    env["TMPDIR"] = str(spool)  # where standard input is spooled, looked at afterwards
    return env


def ledger(tmp: Path, *args: str, stdin: bytes = b"", expect: int = 0) -> Any:
    done = subprocess.run(
        [LEDGER, *args], input=stdin, capture_output=True, env=_env(tmp), cwd=tmp, timeout=120
    )
    assert done.returncode == expect, (args, done.returncode, done.stderr.decode())
    return done


def _events(data: bytes, fmt: str) -> list[Any]:
    if fmt == "jsonl":
        return data.splitlines()
    return [decoded for _, decoded in AvroCodec().read_container(io.BytesIO(data))]


@pytest.mark.parametrize("fmt", FORMATS)
def test_generate_writes_to_standard_output_what_the_file_holds(tmp_path: Path, fmt: str) -> None:
    ledger(tmp_path, "generate", "--users", "40", "--seed", "3", "-o", f"events.{fmt}")
    piped = ledger(tmp_path, "generate", "--users", "40", "--seed", "3", "-o", "-", "--format", fmt)
    written = (tmp_path / f"events.{fmt}").read_bytes()
    assert _events(piped.stdout, fmt) == _events(written, fmt)
    assert len(_events(written, fmt)) > 40
    assert piped.stderr == b""  # nothing but the stream, and nothing said beside it


@pytest.mark.parametrize("fmt", FORMATS)
def test_replay_from_standard_input_applies_once_as_a_file_does(tmp_path: Path, fmt: str) -> None:
    stream = ledger(
        tmp_path, "generate", "--users", "40", "--seed", "5", "-o", "-", "--format", fmt
    ).stdout
    db = ["--db", f"sqlite:///{tmp_path / 'piped.db'}"]
    replay = ["replay", "-", "--format", fmt, "--json", *db]
    first = json.loads(ledger(tmp_path, *replay, stdin=stream).stdout)
    assert first["applied"] > 0 and first["dead_lettered"] == 0
    again = json.loads(ledger(tmp_path, *replay, stdin=stream).stdout)
    assert again["applied"] == 0 and again["events_per_second"] is None
    # Its position is stored under the content's hash: the same bytes from a file are known.
    (tmp_path / f"same.{fmt}").write_bytes(stream)
    from_file = json.loads(ledger(tmp_path, "replay", f"same.{fmt}", "--json", *db).stdout)
    assert from_file["applied"] == 0
    assert from_file["already_applied"] == again["already_applied"] > 0
    # The same store as replaying the file into an empty one gives.
    other = ["--db", f"sqlite:///{tmp_path / 'file.db'}"]
    direct = json.loads(ledger(tmp_path, "replay", f"same.{fmt}", "--json", *other).stdout)
    assert (direct["applied"], direct["assignments"]) == (first["applied"], first["assignments"])
    assert not any((tmp_path / "spool").iterdir()), "the spooled copy is removed"


def test_generate_piped_into_replay(tmp_path: Path) -> None:
    """`ledger generate -o - --format jsonl | ledger replay - --format jsonl`, a real pipe."""
    env = _env(tmp_path)
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    with subprocess.Popen(
        [LEDGER, "generate", "--users", "25", "-o", "-", "--format", "jsonl"],
        stdout=subprocess.PIPE,
        env=env,
    ) as producer:
        consumer = subprocess.run(
            [LEDGER, "replay", "-", "--format", "jsonl", "--json", "--db", db],
            stdin=producer.stdout,
            capture_output=True,
            env=env,
            timeout=120,
        )
    assert producer.returncode == 0 and consumer.returncode == 0, consumer.stderr
    assert json.loads(consumer.stdout)["users"] == 25
    assert Cli(db).json("history", "u-000001")["entries"]


def test_bad_lines_from_standard_input_are_dead_lettered_with_their_line(tmp_path: Path) -> None:
    lines = json.dumps(signup(1, "u-1")).encode() + b"\n{not json\n"
    db = ["--db", f"sqlite:///{tmp_path / 'ledger.db'}"]
    result = ledger(tmp_path, "replay", "-", "--format", "jsonl", *db, stdin=lines, expect=3)
    assert b"stdin.jsonl:2" in result.stderr
    listed = json.loads(ledger(tmp_path, "dead-letters", "list", "--json", *db).stdout)
    assert [d["position"] for d in listed["dead_letters"]] == ["stdin.jsonl:2"]


def test_nothing_on_standard_input_applies_nothing(tmp_path: Path) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 'ledger.db'}"]
    empty = json.loads(ledger(tmp_path, "replay", "-", "--format", "jsonl", "--json", *db).stdout)
    assert (empty["applied"], empty["dead_lettered"]) == (0, 0)
    # No bytes are not an Avro container: dead-lettered, as an empty .avro file is.
    result = ledger(tmp_path, "replay", "-", "--format", "avro", "--json", *db, expect=3)
    assert json.loads(result.stdout)["dead_lettered"] == 1


@pytest.mark.kafka
def test_publish_from_standard_input(tmp_path: Path, kafka_broker: Any, kafka_topic: str) -> None:
    stream = ledger(tmp_path, "generate", "--users", "10", "-o", "-", "--format", "avro").stdout
    kafka = ["--bootstrap", kafka_broker.bootstrap, "--topic", kafka_topic]
    sent = ledger(tmp_path, "publish", "-", "--format", "avro", "--json", *kafka, stdin=stream)
    db = ["--db", f"sqlite:///{tmp_path / 'ledger.db'}"]
    replayed = json.loads(ledger(tmp_path, "replay", "--from-kafka", "--json", *kafka, *db).stdout)
    assert replayed["applied"] + replayed["duplicates"] == json.loads(sent.stdout)["sent"]
    # And the topic back to standard output, as an archive that replays to the same store.
    exported = ledger(tmp_path, "export", "-o", "-", *kafka)
    assert exported.stderr.decode().startswith(f"wrote {json.loads(sent.stdout)['sent']} events")
    again = ["--db", f"sqlite:///{tmp_path / 'archive.db'}"]
    from_archive = ledger(tmp_path, "replay", "-", "--format", "avro", "--json", *again,
                          stdin=exported.stdout)  # fmt: skip
    assert json.loads(from_archive.stdout)["assignments"] == replayed["assignments"]
