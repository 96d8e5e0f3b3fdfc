"""The quixstreams contender of `ledger bench`: a per-user count kept in quixstreams' state
store (RocksDB), over the benchmark topic, until `expected` messages were seen. Runs in the
benchmark's own virtual environment (quixstreams is no dependency of the ledger), so it
imports nothing of the ledger. Prints one JSON line: messages, seconds first->last."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from typing import Any

from quixstreams import Application


def main() -> None:
    bootstrap, topic, group, expected = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    with tempfile.TemporaryDirectory() as state_dir:
        app = Application(
            broker_address=bootstrap,
            consumer_group=group,
            auto_offset_reset="earliest",
            state_dir=state_dir,
        )
        source = app.topic(topic, key_deserializer="str", value_deserializer="bytes")
        seen = {"n": 0, "first": 0.0, "last": 0.0}

        def count(_value: bytes, state: Any) -> None:
            state.set("events", state.get("events", 0) + 1)
            now = time.perf_counter()
            if not seen["n"]:
                seen["first"] = now
            seen["n"] += 1
            seen["last"] = now
            if seen["n"] >= expected:
                app.stop()

        app.dataframe(source).update(count, stateful=True)
        app.run()
    print(json.dumps({"messages": seen["n"], "seconds": seen["last"] - seen["first"]}))


if __name__ == "__main__":
    main()
