"""This node in the pool: heartbeat, the live member list, and the pool-wide quota gate.

Pool state is advisory for availability: when the store is unreachable the
node logs once that it is degraded, keeps serving from local state (its own
relay only, its own quota counts), and rejoins (re-publishing its true
counts) when the store answers again. Nothing here may crash the node.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.logger import Logger

from edge.pool.members import Member, least_loaded_first
from edge.pool.store import MemoryStore, RedisStore, StoreUnavailable

log = Logger(namespace="umedge.pool")


class PoolMembership(service.Service):
    """Publishes this node (every `interval` s, TTL `ttl` s) and keeps the live members."""

    def __init__(self, store: MemoryStore | RedisStore, describe: Callable[[], Member],
                 interval: float, ttl: float, local_counts: Callable[[], dict[str, int]]) -> None:
        self.store = store
        self._describe = describe
        self.interval, self.ttl = interval, ttl
        self._local_counts = local_counts
        self.degraded = False
        self.live: list[Member] = []
        self.touched: set[str] = set()  # identities whose pool count this node has changed
        self._task: asyncio.Task[None] | None = None

    # --- membership -----------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._task = asyncio.get_event_loop().create_task(self._beat_forever())

    async def _beat_forever(self) -> None:
        while True:
            await self.beat()
            await asyncio.sleep(self.interval)

    async def beat(self) -> None:
        me = self._describe()
        try:
            if self.degraded:
                await self.store.resync(me.name, self._local_counts(), self.touched)
            await self.store.heartbeat(me, self.ttl)
            members = await self.store.members()
        except StoreUnavailable as error:
            self._degrade(str(error))
            self.live = [me]
            return
        except Exception:  # noqa: BLE001 - a pool bug must not take the relay down
            log.failure("pool heartbeat failed")
            self.live = [me]
            return
        if self.degraded:
            log.info("pool store reachable again: rejoined the pool")
            self.degraded = False
        self.live = least_loaded_first(members)

    def _degrade(self, why: str) -> None:
        if not self.degraded:
            log.warn("pool store unreachable ({why}): serving from local state (degraded)", why=why)
        self.degraded = True

    def stopService(self) -> Any:
        super().stopService()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        name = self._describe().name

        async def leave() -> None:
            try:
                await self.store.leave(name)
            except StoreUnavailable:
                pass
            await self.store.close()

        from twisted.internet import defer

        return defer.Deferred.fromFuture(asyncio.ensure_future(asyncio.wait_for(leave(), 2))).addErrback(
            lambda failure: None)

    def others(self, me: str) -> list[Member]:
        return [m for m in self.live if m.name != me]

    # --- the quota gate (edge.turn.engine.QuotaGate) -----------------------------------

    def quota_gate(self, node: str, limit: int) -> PoolQuota:
        return PoolQuota(self, node, limit)


class PoolQuota:
    """Pool-wide per-identity allocation counts; local decisions while degraded."""

    def __init__(self, membership: PoolMembership, node: str, limit: int) -> None:
        self._membership, self._node, self._limit = membership, node, limit

    def acquire(self, identity: str) -> bool | asyncio.Future[bool]:
        membership = self._membership
        if not membership.store.shared or membership.degraded:
            return True  # the engine's own per-identity count already said yes
        membership.touched.add(identity)

        async def ask() -> bool:
            try:
                return await membership.store.acquire(self._node, identity, self._limit)
            except StoreUnavailable as error:
                membership._degrade(str(error))
                return True
            except Exception:  # noqa: BLE001
                log.failure("pool quota check failed")
                return True

        return asyncio.ensure_future(ask())

    def release(self, identity: str) -> None:
        membership = self._membership
        if not membership.store.shared or membership.degraded:
            return

        async def tell() -> None:
            try:
                await membership.store.release(self._node, identity)
            except StoreUnavailable as error:
                membership._degrade(str(error))  # the rejoin resync repairs the count
            except Exception:  # noqa: BLE001
                log.failure("pool quota release failed")

        asyncio.ensure_future(tell())


def describe_node(name: str, relay_host: str, intranet_host: str, internet_host: str, udp: int, tcp: int,
                  tls: int, allocations: Callable[[], int], capacity: int) -> Callable[[], Member]:
    def describe() -> Member:
        return Member(name, relay_host, intranet_host, internet_host, udp, tcp, tls, allocations(), capacity,
                      time.time())

    return describe
