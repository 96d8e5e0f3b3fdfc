"""The local broker's launcher and the Kafka client settings, without a broker: pid files
naming several brokers need a port, and the client settings come from the environment or
name the variable that is wrong. The launcher, topics and clients against a real broker are
in tests/integration/test_infra_broker.py; the `ledger broker` and `topics` commands in
tests/e2e/test_broker_commands.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra import launcher
from ledger.config import kafka_client_settings
from ledger.errors import UsageError
from tests.helpers.kafka import plant_pid_file


def test_stop_with_several_brokers_needs_a_port(tmp_path: Path) -> None:
    plant_pid_file(tmp_path, 3, pid=999_999_999)
    plant_pid_file(tmp_path, 4, pid=999_999_999)
    with pytest.raises(launcher.BrokerError, match="several brokers"):
        launcher.stop(state_dir=tmp_path)


def test_client_settings_from_env() -> None:
    env = {
        "LEDGER_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "LEDGER_KAFKA_SASL_MECHANISM": "scram-sha-512",
        "LEDGER_KAFKA_SASL_USERNAME": "ledger",
        "LEDGER_KAFKA_SASL_PASSWORD": "s3cret",
        "LEDGER_KAFKA_SSL_CAFILE": "/etc/ca.pem",
        "LEDGER_KAFKA_SSL_CHECK_HOSTNAME": "false",
        "LEDGER_KAFKA_CLIENT_ID": "",
        "UNRELATED": "x",
    }
    assert kafka_client_settings(env) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "ledger",
        "sasl_plain_password": "s3cret",
        "ssl_cafile": "/etc/ca.pem",
        "ssl_check_hostname": False,
    }
    assert kafka_client_settings({}) == {}
    with pytest.raises(UsageError, match="LEDGER_KAFKA_SECURITY_PROTOCOL"):
        kafka_client_settings({"LEDGER_KAFKA_SECURITY_PROTOCOL": "TLS"})
    with pytest.raises(UsageError, match="SASL_PLAINTEXT or SASL_SSL"):
        kafka_client_settings({"LEDGER_KAFKA_SASL_MECHANISM": "PLAIN"})
