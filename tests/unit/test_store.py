"""The store's schema version, without a database: the head revision the code states is
Alembic's head. Migrations and stores on real databases are in tests/integration/."""

from __future__ import annotations


def test_the_head_revision_constant_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    from ledger.store.database import HEAD_REVISION, _alembic_config

    assert ScriptDirectory.from_config(_alembic_config()).get_current_head() == HEAD_REVISION
