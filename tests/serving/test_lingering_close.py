"""Why app/connections.py closes through LingeringTransport: a server that closes a connection while the client's
bytes sit unread makes the kernel send a reset instead of a FIN, and the client's read fails with ECONNRESET even
though the answer arrived (CI saw it once: a partial-header client reading its 408 on a loaded machine).

The unread bytes are made deterministic here by pausing the server's reads; the real sockets and a real asyncio
loop do the rest. The plain transport shows the failure, so the test can fail."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from app.connections import LingeringTransport


def closing_server_answers(*, linger: bool) -> tuple[bytes, str]:
    """What a client that sent 1,000 bytes reads after the server answers and closes without having read them."""

    class AnswerThenClose(asyncio.Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            transport.pause_reading()  # the client's bytes stay unread in the kernel, as under a stalled loop
            loop = asyncio.get_running_loop()
            self.transport = LingeringTransport(transport, loop) if linger else transport
            loop.call_later(0.2, self.answer)

        def answer(self) -> None:
            self.transport.write(b"answer")
            self.transport.close()

    def client(port: int) -> tuple[bytes, str]:
        received = b""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"x" * 1000)
            time.sleep(0.5)  # the server has answered and closed by now
            try:
                while chunk := sock.recv(100):
                    received += chunk
            except ConnectionResetError:
                return received, "reset"
        return received, "end of stream"

    async def run() -> tuple[bytes, str]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(AnswerThenClose, "127.0.0.1", 0)
        try:
            return await loop.run_in_executor(None, client, server.sockets[0].getsockname()[1])
        finally:
            server.close()

    return asyncio.run(run())


def test_a_plain_close_with_unread_client_bytes_resets_the_connection():
    assert closing_server_answers(linger=False) == (b"answer", "reset")


@pytest.mark.parametrize("attempt", range(3))
def test_a_lingering_close_ends_the_stream_cleanly_after_the_answer(attempt):
    assert closing_server_answers(linger=True) == (b"answer", "end of stream")
