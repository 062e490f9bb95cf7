"""Random parts of identifiers (fax ids, raw-log ids, Celery task ids), from a pool of urandom bytes.

Each ``os.urandom`` call is a system call, and on the virtual machines this runs on one costs more
than the rest of an id's making; the webhook path needs three per request. The pool reads 4 KiB at
a time and hands out slices, so the bytes are the operating system's all the same. A forked child
(Celery's prefork workers) starts with an empty pool: it never hands out its parent's bytes.
"""

from __future__ import annotations

import os
import threading

_POOL_SIZE = 4096  # bytes per read, kept as hex digits (ids want hex)


class _Pool:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.digits = ""
        self.offset = 0

    def take_hex(self, count: int) -> str:
        """``count`` random hex digits."""
        with self.lock:
            end = self.offset + count
            if end > len(self.digits):
                self.digits = os.urandom(max(_POOL_SIZE, (count + 1) // 2)).hex()
                end = count
            start, self.offset = end - count, end
            return self.digits[start:end]


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.reset)


def random_hex(size: int) -> str:
    """``size`` random bytes as ``2 * size`` hex digits (as ``secrets.token_hex``)."""
    return _pool.take_hex(2 * size)


def uuid4() -> str:
    """A random (version 4) UUID as text, as ``str(uuid.uuid4())`` gives one."""
    h = _pool.take_hex(32)
    # The version nibble is 4; the variant's two top bits are 10 (so the nibble is 8, 9, a or b).
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
