"""The console's questions to every node of a Redis pool: one PUBLISH, one reply list per question.

A node asking publishes {"id", "op", "args"} on `<prefix>:admin`. Every
node (the asker too) subscribes to that channel, answers from its own state
and RPUSHes {"node", ...} onto `<prefix>:admin:reply:<id>` (expiring in 10 s).
PUBLISH says how many nodes heard the question, so the asker waits for that
many answers, at most ANSWER_WAIT seconds, and names the live members that
did not answer. A user's refusal is also written as `<prefix>:refusal:<user>`
(expiring with it), so a node that starts later refuses the user too.

Only what Redis holds is trusted here, as for the pool's quotas: whoever can
write to the pool's Redis is a pool member.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from edge.node.admin import Refusals

log = Logger(namespace="umedge.admin")

ANSWER_WAIT = 1.5
REPLY_TTL = 10
MAX_MESSAGE = 4 * 1024 * 1024
RECONNECT = 1.0
REFUSAL_SCAN = 5.0

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class PoolChannel:
    def __init__(self, url: str, prefix: str, node: str, refusals: Refusals,
                 live: Callable[[], list[str]]) -> None:
        import redis.asyncio as aioredis

        self.node, self.refusals, self._live = node, refusals, live
        self._channel = f"{prefix}:admin"
        self._reply = f"{prefix}:admin:reply:"
        self._refusal = f"{prefix}:refusal:"
        self._client = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1,
                                               health_check_interval=0)
        self.handler: Handler | None = None
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()
        self._quiet = False  # the outage was logged

    def live_names(self) -> list[str]:
        return self._live()

    def start(self) -> None:
        self._task = asyncio.get_event_loop().create_task(self._listen_forever())

    def stop(self) -> Any:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

        async def close() -> None:
            try:
                await self._client.aclose()
            except Exception:  # noqa: BLE001 - closing a dead connection may fail
                pass

        return defer.Deferred.fromFuture(asyncio.ensure_future(close())).addErrback(lambda failure: None)

    # --- answering ------------------------------------------------------------------

    async def _listen_forever(self) -> None:
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - Redis down: retry, say so once
                self.subscribed.clear()
                if not self._quiet:
                    log.warn("console: pool channel unavailable ({why}); retrying", why=type(error).__name__)
                self._quiet = True
                await asyncio.sleep(RECONNECT)

    async def _listen(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._channel)
            await self._load_refusals()
            self.subscribed.set()
            if self._quiet:
                log.info("console: pool channel available again")
                self._quiet = False
            scanned = time.monotonic()
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None:
                    asyncio.ensure_future(self._answer(message.get("data")))
                if time.monotonic() - scanned > REFUSAL_SCAN:
                    await self._load_refusals()
                    scanned = time.monotonic()
        finally:
            await pubsub.aclose()

    async def _answer(self, data: Any) -> None:
        try:
            if not isinstance(data, bytes | str) or len(data) > MAX_MESSAGE:
                return
            question = json.loads(data)
            ident, op, args = str(question["id"]), str(question["op"]), dict(question["args"])
            if not ident.isalnum() or len(ident) > 64 or self.handler is None:
                return
        except (ValueError, KeyError, TypeError):
            return
        try:
            answer = {"node": self.node, **await self.handler(op, args)}
        except Exception as error:  # noqa: BLE001 - one bad question must not stop the listener
            answer = {"node": self.node, "error": f"{type(error).__name__}: {error}"}
        key = self._reply + ident
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.rpush(key, json.dumps(answer))
                pipe.expire(key, REPLY_TTL)
                await pipe.execute()
        except Exception as error:  # noqa: BLE001
            log.warn("console: could not answer a pool question ({why})", why=type(error).__name__)

    async def _load_refusals(self) -> None:
        keys = [key async for key in self._client.scan_iter(match=self._refusal + "*", count=200)]
        if not keys:
            return
        for value in await self._client.mget(keys):
            try:
                entry = json.loads(value) if value is not None else None
                if entry is not None:
                    self.refusals.add(str(entry["user"]), float(entry["until"]), str(entry["by"]))
            except (ValueError, KeyError, TypeError):
                continue

    # --- asking ---------------------------------------------------------------------

    async def request(self, op: str, args: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
        """Every node's answer to (op, args) and the live members that did not answer."""
        ident = secrets.token_hex(12)
        if op == "kill" and args.get("user") is not None and args.get("until") is not None:
            until = float(args["until"])
            if until > time.time():
                await self._client.set(self._refusal + str(args["user"]), json.dumps(
                    {"user": args["user"], "until": until, "by": args.get("by")}), pxat=int(until * 1000))
            else:
                await self._client.delete(self._refusal + str(args["user"]))
        heard = int(await self._client.publish(self._channel, json.dumps({"id": ident, "op": op, "args": args})))
        answers: list[dict[str, Any]] = []
        key = self._reply + ident
        deadline = time.monotonic() + ANSWER_WAIT
        while len(answers) < heard and time.monotonic() < deadline:
            popped = await self._client.lpop(key, heard - len(answers))
            for raw in popped if isinstance(popped, list) else []:
                try:
                    answers.append(json.loads(raw))
                except ValueError:
                    continue
            if len(answers) < heard:
                await asyncio.sleep(0.02)
        answered = {str(a.get("node")) for a in answers}
        return answers, sorted(set(self._live()) - answered)


__all__ = ["PoolChannel"]
