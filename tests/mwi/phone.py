"""An MWI subscriber built from the project's own SIP client (um.sip.uac): SUBSCRIBE out, NOTIFYs in.

The phone listens on a loopback TCP port (its Contact) where it answers every
NOTIFY with 200 and keeps it, with the time it came.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass

from um.mwi.summary import parse
from um.sip.message import Request, Response, make_response
from um.sip.parser import StreamParser
from um.sip.transaction import make_request
from um.sip.uac import UserAgentClient
from um.sip.uac_core import Credentials


@dataclass
class Notify:
    request: Request
    at: float  # time.time() when it came

    @property
    def summary(self) -> dict[str, str]:
        return parse(self.request.body)

    @property
    def state(self) -> str:
        return self.request.headers.get("Subscription-State") or ""


class NotifyListener:
    """A TCP SIP endpoint that answers NOTIFY with 200 and records it."""

    def __init__(self, status: int = 200) -> None:
        self.notifies: list[Notify] = []
        self.status = status
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._arrived = asyncio.Event()

    async def start(self) -> NotifyListener:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = StreamParser()
        try:
            while data := await reader.read(65536):
                for event in parser.feed(data):
                    message = event.message
                    if isinstance(message, Request):
                        if message.method == "NOTIFY":
                            self.notifies.append(Notify(message, time.time()))
                            self._arrived.set()
                        writer.write(make_response(message, self.status if message.method == "NOTIFY" else 200)
                                     .encode())
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def next(self, timeout: float, after: int | None = None) -> Notify:
        """The NOTIFY number `after` (0-based; default: the next one to come)."""
        index = len(self.notifies) if after is None else after
        deadline = time.monotonic() + timeout
        while len(self.notifies) <= index:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no NOTIFY #{index} within {timeout}s (got {len(self.notifies)})")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                pass
        return self.notifies[index]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class Phone:
    """Subscribes to a mailbox's message-summary on the UM service; the NOTIFYs land in `listener`."""

    def __init__(self, um_port: int, mailbox: str = "1001", credentials: Credentials | None = None,
                 contact_host: str = "127.0.0.1") -> None:
        self.um_port, self.mailbox, self.credentials = um_port, mailbox, credentials
        self.contact_host = contact_host
        self.client = UserAgentClient()
        self.listener = NotifyListener()
        self.call_id = secrets.token_hex(8) + "@phone"
        self.from_tag = secrets.token_hex(4)
        self.to_tag: str | None = None
        self.cseq = 0

    async def start(self) -> Phone:
        await self.listener.start()
        return self

    def _request(self, expires: int, event: str = "message-summary") -> Request:
        self.cseq += 1
        uri = f"sip:{self.mailbox}@127.0.0.1:{self.um_port}"
        request = make_request("SUBSCRIBE", uri, via_host="127.0.0.1", transport="tcp",
                               from_uri=f"sip:{self.mailbox}@umedge.test", to_uri=f"sip:{self.mailbox}@umedge.test",
                               call_id=self.call_id, cseq=self.cseq, from_tag=self.from_tag, extra=[
                                   ("Contact", f"<sip:phone@{self.contact_host}:{self.listener.port};transport=tcp>"),
                                   ("Event", event), ("Expires", str(expires)),
                                   ("Accept", "application/simple-message-summary")])
        if self.to_tag:
            request.headers.items = [(n, f"{v};tag={self.to_tag}" if n == "To" else v)
                                     for n, v in request.headers.items]
        return request

    async def subscribe(self, expires: int = 120, event: str = "message-summary") -> Response:
        response = await self.client.request("127.0.0.1", self.um_port, "tcp", self._request(expires, event),
                                             timeout=5, credentials=self.credentials)
        if response.status == 200 and self.to_tag is None:
            to = response.headers.get("To") or ""
            self.to_tag = to.split("tag=", 1)[1].split(";", 1)[0] if "tag=" in to else None
        return response

    async def close(self) -> None:
        await self.client.aclose()
        await self.listener.close()
