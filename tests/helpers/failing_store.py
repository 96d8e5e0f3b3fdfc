"""A store opener for a parallel replay's workers whose store fails after a few plans:
how the tests make a worker die mid-replay without timing. Picklable, as the workers get
their opener pickled."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ledger.store.database import open_engine
from ledger.store.sql import SqlStore, SqlTransaction


class _FailingStore(SqlStore):
    def __init__(self, url: str, fail_after: int) -> None:
        super().__init__(open_engine(url, migrate=False))
        self.left = fail_after

    @contextmanager
    def reading(self) -> Iterator[SqlTransaction]:
        self.left -= 1
        if self.left < 0:
            raise RuntimeError("this worker planned enough")
        with super().reading() as view:
            yield view


class FailingStoreOpener:
    def __init__(self, url: str, fail_after: int) -> None:
        self.url = url
        self.fail_after = fail_after

    def __call__(self) -> SqlStore:
        return _FailingStore(self.url, self.fail_after)
