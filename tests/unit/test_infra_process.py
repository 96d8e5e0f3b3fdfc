"""Process identities without a process: pids that are gone or invalid are never alive and
never signalled, and an identity record round-trips through JSON. Spawned, detached,
stubborn and zombie processes are in tests/integration/test_infra_process.py."""

from __future__ import annotations

import json
import time

import pytest

from infra import process
from infra.process import ProcessIdentity


def test_gone_and_invalid_pids_are_never_alive() -> None:
    # Above every pid_max Linux allows (2**22), so never a real process.
    assert process.identify(999_999_999) is None
    assert process.terminate(999_999_999, grace=0.1) is False
    assert not process.is_alive(ProcessIdentity(999_999_999, time.time()))
    # 0 and -1 address process groups when signalled; they must never get that far.
    for pid in (0, -1):
        assert process.identify(pid) is None
        assert process.terminate(pid, grace=0.1) is False


def test_identity_record_round_trips_through_json() -> None:
    identity = ProcessIdentity(1234, 1_700_000_000.25, ("tansu", "broker"))
    record = json.loads(json.dumps(identity.to_record()))
    assert ProcessIdentity.from_record({**record, "port": 9092}) == identity
    assert ProcessIdentity.from_record({"pid": 1, "create_time": 2}) == ProcessIdentity(1, 2.0)
    for bad in (
        {"create_time": 1.0},
        {"pid": "1", "create_time": 1.0},
        {"pid": True, "create_time": 1.0},
        {"pid": 1},
        {"pid": 1, "create_time": None},
        {"pid": 1, "create_time": 1.0, "cmdline": "tansu broker"},
    ):
        with pytest.raises(ValueError):
            ProcessIdentity.from_record(bad)
