"""Privacy by default, in the settings: without LEDGER_PHONE_KEY (or with a blank one) the
ledger knows it runs on the public development key. What the commands do about it is in
tests/e2e/test_privacy.py."""

from __future__ import annotations

from ledger.config import settings_from_env


def test_settings_know_the_development_key() -> None:
    assert settings_from_env({}).uses_dev_phone_key
    assert settings_from_env({"LEDGER_PHONE_KEY": "  "}).uses_dev_phone_key
    assert not settings_from_env({"LEDGER_PHONE_KEY": "secret"}).uses_dev_phone_key
