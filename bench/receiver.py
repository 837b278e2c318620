"""A webhook receiver that costs next to nothing: answers every POST with 204.

It stands in for the client's backend in the webhook scenario, so it must
not be what limits the rate: a bare asyncio protocol with httptools' parser
(both already installed with uvicorn), keep-alive, no framework.
``GET /count`` answers how many POSTs it has received, so the harness can
tell whether the service delivers webhooks at all.

Run as ``python -m bench.receiver --port P``.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

import httptools
import uvloop

NO_CONTENT = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"


class Counter:
    posts = 0


class ReceiverProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_complete(self) -> None:
        assert self.transport is not None
        if self.parser.get_method() == b"GET":
            body = str(Counter.posts).encode()
            head = f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            self.transport.write(head + body)
            return
        Counter.posts += 1
        self.transport.write(NO_CONTENT)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(ReceiverProtocol, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
