"""Where pool state lives: in this process ("memory") or in Redis ("redis://HOST:PORT/DB").

Both stores have the same async API. Pool-wide quotas count per node and per
identity in one Redis hash, and a Lua script adds only the counts of nodes
whose membership key is still alive, so a crashed node's allocations stop
counting once its heartbeat expires. Every Redis failure raises
StoreUnavailable; the caller degrades to local state.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Iterable
from typing import Any

from edge.pool.members import Member

_ACQUIRE = """
local total = 0
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local node = entries[i]
  if node == ARGV[1] or redis.call('EXISTS', ARGV[4] .. node) == 1 then
    total = total + tonumber(entries[i + 1])
  end
end
if total >= tonumber(ARGV[2]) then
  return 0
end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""


class StoreUnavailable(Exception):
    """The shared store cannot be reached; the message says why (no secrets in it)."""


class MemoryStore:
    """One node's pool: everything local, nothing shared."""

    shared = False

    def __init__(self) -> None:
        self._members: dict[str, tuple[Member, float]] = {}
        self._counts: dict[str, int] = {}
        self._registrations: dict[str, dict[str, object]] = {}

    async def heartbeat(self, member: Member, ttl: float) -> None:
        self._members[member.name] = (member, time.time() + ttl)

    async def members(self) -> list[Member]:
        now = time.time()
        return [m for m, until in self._members.values() if until >= now]

    async def leave(self, name: str) -> None:
        self._members.pop(name, None)

    async def acquire(self, node: str, identity: str, limit: int) -> bool:
        if self._counts.get(identity, 0) >= limit:
            return False
        self._counts[identity] = self._counts.get(identity, 0) + 1
        return True

    async def release(self, node: str, identity: str) -> None:
        if self._counts.get(identity, 0) > 1:
            self._counts[identity] -= 1
        else:
            self._counts.pop(identity, None)

    async def resync(self, node: str, counts: dict[str, int], touched: Iterable[str]) -> None:
        self._counts = {k: v for k, v in counts.items() if v > 0}

    async def set_registration(self, node: str, server: str, state: dict[str, object], ttl: float) -> None:
        self._registrations[f"{node}|{server}"] = dict(state)

    async def registrations(self) -> dict[str, dict[str, object]]:
        return dict(self._registrations)

    async def close(self) -> None:
        return None


class RedisStore:
    """The pool in Redis (redis-py's asyncio client), with short timeouts so a dead Redis is noticed fast."""

    shared = True

    def __init__(self, url: str, prefix: str = "umedge", timeout: float = 1.0) -> None:
        import redis.asyncio as aioredis

        self._client = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                               retry_on_timeout=False, health_check_interval=0)
        self._prefix = prefix
        self._acquire = self._client.register_script(_ACQUIRE)

    def _member_key(self, name: str) -> str:
        return f"{self._prefix}:member:{name}"

    def _quota_key(self, identity: str) -> str:
        return f"{self._prefix}:quota:{identity}"

    async def _call(self, coroutine: Awaitable[Any]) -> Any:
        import redis.exceptions

        try:
            return await coroutine
        except (redis.exceptions.RedisError, OSError) as error:
            raise StoreUnavailable(type(error).__name__ + ": " + str(error).split(" for ")[0]) from None

    async def heartbeat(self, member: Member, ttl: float) -> None:
        await self._call(self._client.set(self._member_key(member.name), member.to_json(), px=int(ttl * 1000)))

    async def _scan(self, pattern: str) -> list[bytes]:
        return [key async for key in self._client.scan_iter(match=pattern, count=100)]

    async def members(self) -> list[Member]:
        keys = await self._call(self._scan(self._member_key("*")))
        if not keys:
            return []
        values = await self._call(self._client.mget(keys))
        return [m for m in (Member.from_json(v) for v in values if v is not None) if m is not None]

    async def leave(self, name: str) -> None:
        await self._call(self._client.delete(self._member_key(name)))

    async def acquire(self, node: str, identity: str, limit: int) -> bool:
        result = await self._call(self._acquire(keys=[self._quota_key(identity)],
                                                args=[node, limit, 7200, self._member_key("")]))
        return bool(result)

    async def release(self, node: str, identity: str) -> None:
        key = self._quota_key(identity)
        left = await self._call(self._client.hincrby(key, node, -1))
        if int(left) <= 0:
            await self._call(self._client.hdel(key, node))

    async def resync(self, node: str, counts: dict[str, int], touched: Iterable[str]) -> None:
        """After an outage: make this node's share of every quota what it really holds."""
        for identity in set(touched) | set(counts):
            key, count = self._quota_key(identity), counts.get(identity, 0)
            if count > 0:
                await self._call(self._client.hset(key, node, count))
                await self._call(self._client.expire(key, 7200))
            else:
                await self._call(self._client.hdel(key, node))

    async def set_registration(self, node: str, server: str, state: dict[str, object], ttl: float) -> None:
        import json

        await self._call(self._client.set(f"{self._prefix}:mediation:{node}|{server}", json.dumps(state),
                                          px=int(ttl * 1000)))

    async def registrations(self) -> dict[str, dict[str, object]]:
        import json

        keys = await self._call(self._scan(f"{self._prefix}:mediation:*"))
        values = await self._call(self._client.mget(keys)) if keys else []
        prefix = len(f"{self._prefix}:mediation:")
        return {k.decode()[prefix:] if isinstance(k, bytes) else k[prefix:]: json.loads(v)
                for k, v in zip(keys, values, strict=True) if v is not None}

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except Exception:  # noqa: BLE001 - closing a dead connection may fail; nothing to do
            pass


def open_store(spec: str, prefix: str = "umedge") -> MemoryStore | RedisStore:
    return MemoryStore() if spec == "memory" else RedisStore(spec, prefix)
