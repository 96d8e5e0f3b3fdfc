"""Users' projections kept between batches, so that active users are not reloaded every
batch: the projector's (one writer) and each parallel replay worker's.

Bounded by memory rather than by a user count that means little for users of 2 or 200
events: each user weighs its estimated bytes (`cached_bytes`), and the least recently
used go first. Users that are pinned (a worker's users of plans not yet committed, whose
state the store does not hold yet) are never dropped.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping

from ledger.domain.projection import UserProjection

# What one observation or believed history row of a cached user costs in memory, fold state
# included (measured with tracemalloc on generated users: ~900 bytes).
CACHED_ITEM_BYTES = 1000


def cached_bytes(proj: UserProjection) -> int:
    """The estimated memory a cached projection holds."""
    return CACHED_ITEM_BYTES * (1 + len(proj.observations) + len(proj.believed))


class UserCache:
    def __init__(self, max_bytes: int, max_users: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_users = max_users
        self.bytes = 0  # estimated, of every cached user
        self._users: OrderedDict[str, UserProjection] = OrderedDict()
        self._weights: dict[str, int] = {}
        self._pins: Counter[str] = Counter()

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._users

    def __getitem__(self, user_id: str) -> UserProjection:
        return self._users[user_id]

    def values(self) -> Iterable[UserProjection]:
        return self._users.values()

    def remember(self, projections: Mapping[str, UserProjection]) -> None:
        """Keep these users (as most recently used), then drop the least recently used
        unpinned ones until within bounds."""
        for user_id, proj in projections.items():
            self._users[user_id] = proj
            self._users.move_to_end(user_id)
            weight = cached_bytes(proj)
            self.bytes += weight - self._weights.get(user_id, 0)
            self._weights[user_id] = weight
        self._evict()

    def drop(self, user_id: str) -> None:
        self._users.pop(user_id, None)
        self.bytes -= self._weights.pop(user_id, 0)

    def clear(self) -> None:
        self._users.clear()
        self._weights.clear()
        self._pins.clear()
        self.bytes = 0

    def pin(self, user_ids: Iterable[str]) -> None:
        self._pins.update(user_ids)

    def unpin(self, user_ids: Iterable[str]) -> None:
        for user_id in user_ids:
            # Dropped at zero: a count kept for every user ever pinned would grow with the
            # stream.
            left = self._pins[user_id] - 1
            if left > 0:
                self._pins[user_id] = left
            else:
                self._pins.pop(user_id, None)
        self._evict()

    def _over(self) -> bool:
        over_count = self.max_users is not None and len(self._users) > self.max_users
        return over_count or self.bytes > self.max_bytes

    def _evict(self) -> None:
        while self._users and self._over():
            user_id = next(iter(self._users))
            if self._pins[user_id] > 0:
                # The oldest is still pinned, so every newer one may be too: the bound
                # waits until their plans are committed.
                break
            self.drop(user_id)
