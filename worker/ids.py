"""Random parts of identifiers (fax ids, raw-log ids, Celery task ids), from a pool of urandom bytes.

Each ``os.urandom`` call is a system call, and on the virtual machines this runs on one costs more
than the rest of an id's making; the webhook path needs three per request. The pool reads 4 KiB at
a time and hands out slices, so the bytes are the operating system's all the same. A forked child
(Celery's prefork workers) starts with an empty pool: it never hands out its parent's bytes.
"""

from __future__ import annotations

import os
import threading

_POOL_SIZE = 4096


class _Pool:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.buffer = b""
        self.offset = 0

    def take(self, size: int) -> bytes:
        with self.lock:
            if self.offset + size > len(self.buffer):
                self.buffer = os.urandom(max(_POOL_SIZE, size))
                self.offset = 0
            start = self.offset
            self.offset += size
            return self.buffer[start : self.offset]


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.reset)


def random_bytes(size: int) -> bytes:
    return _pool.take(size)


def random_hex(size: int) -> str:
    """``size`` random bytes as ``2 * size`` hex digits (as ``secrets.token_hex``)."""
    return _pool.take(size).hex()


def uuid4() -> str:
    """A random (version 4) UUID as text, as ``str(uuid.uuid4())`` gives one."""
    h = _pool.take(16).hex()
    # The version nibble is 4; the variant's two top bits are 10 (so the nibble is 8, 9, a or b).
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"
