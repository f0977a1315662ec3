"""Newline-delimited JSON over a stream socket: how the warm servers and their clients talk."""

from __future__ import annotations

import json
import select
import socket
import time
from typing import Any

__all__ = ["JsonLines", "send_json_line"]


def send_json_line(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


class JsonLines:
    """The messages a socket receives, one per line; a line may arrive in pieces, or two in one
    read (the rest is kept for the next message)."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buffer = b""
        self.closed = False  # the peer closed its end

    def next(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next message; None when the peer closed first (`closed` is then set) or, with a
        `timeout`, when none came in time. Without one, reads block as the socket does."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buffer:
            if self.closed:
                return None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([self.conn], [], [], remaining)[0]:
                    return None
            chunk = self.conn.recv(65536)
            if not chunk:
                self.closed = True
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message
