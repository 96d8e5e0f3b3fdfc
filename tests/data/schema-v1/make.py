"""Writes the version-1 files beside it from `events-v1.avro`, run with the code that
wrote event schema version 1 first on sys.path (README.md has the exact commands):
each event of the archive as a single-object Kafka message, and the SQL text of a SQLite
store that replayed the archive.
"""

import json
import sqlite3
import sys
from pathlib import Path

from ledger.codecs.avro import AvroCodec

here = Path(sys.argv[1])
codec = AvroCodec()
with (
    (here / "events-v1.avro").open("rb") as archive,
    (here / "messages-v1.jsonl").open("w") as messages,
):
    for _, item in codec.read_container(archive):
        assert not isinstance(item, Exception), item
        event, _ = item
        value = codec.encode(event).hex()
        messages.write(json.dumps({"key": event.user_id, "value": value}) + "\n")
with (here / "store-v1.sql").open("w") as dump:
    for statement in sqlite3.connect(sys.argv[2]).iterdump():
        dump.write(statement + "\n")
