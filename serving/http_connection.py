"""One HTTP client connection of the front (serving/http_front.py), read against deadlines: every
read of a request head or body has one, so no client holds a thread longer than the front's
timeouts allow."""

from __future__ import annotations

import contextlib
import socket
import time

from serving.http_wire import END_OF_HEAD, MAX_HEAD_BYTES, Head, HttpError, parse_head

LINGER_S = 2.0  # after refusing a body, read (and drop) what the client still sends this long
SEND_TIMEOUT_S = 30.0  # a client that does not read its answer for this long is dropped
_READ_CHUNK = 1 << 16


class TimedOut(Exception):
    """A read deadline passed."""


class Connection:
    """One client socket, read against deadlines (monotonic seconds)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = bytearray()  # received, not consumed yet

    def _receive(self, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimedOut
        self.sock.settimeout(remaining)
        try:
            return self.sock.recv(_READ_CHUNK)
        except TimeoutError:
            raise TimedOut from None

    def read_head(self, idle_deadline: float, head_timeout: float) -> Head | None:
        """The next request head; None when the client closed, or stayed idle past
        idle_deadline, before sending a byte of it. TimedOut once its first byte is older
        than head_timeout; HttpError when it is malformed."""
        started = time.monotonic() if self.buffer else None
        while (end := self.buffer.find(END_OF_HEAD)) < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise HttpError(431, f"request head over {MAX_HEAD_BYTES} bytes")
            try:
                chunk = self._receive(idle_deadline if started is None
                                      else started + head_timeout)
            except TimedOut:
                if started is None:
                    return None
                raise
            if not chunk:
                if self.buffer:
                    raise HttpError(400, "the connection closed in the middle of a request head")
                return None
            if started is None:
                started = time.monotonic()
            self.buffer += chunk
        head = bytes(self.buffer[:end])
        del self.buffer[:end + len(END_OF_HEAD)]
        return parse_head(head)

    def read_body(self, length: int, deadline: float) -> bytes:
        while len(self.buffer) < length:
            chunk = self._receive(deadline)
            if not chunk:
                raise HttpError(400, f"the connection closed after {len(self.buffer)} of "
                                f"{length} body bytes")
            self.buffer += chunk
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return body

    def send(self, data: bytes) -> None:
        self.sock.settimeout(SEND_TIMEOUT_S)
        self.sock.sendall(data)

    def linger(self) -> None:
        """Before closing on an unread body: stop sending, then drop what the client still
        sends for LINGER_S, so that a client writing its whole body before reading gets the
        answer instead of a connection reset."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_S
            while self._receive(deadline):
                pass
