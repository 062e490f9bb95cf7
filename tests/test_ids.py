"""worker/ids.py: pooled random bytes never repeat, not even across a fork."""

from __future__ import annotations

import os
import uuid

from worker.fastpath import ids


def test_random_parts_do_not_repeat_across_pool_refills() -> None:
    seen = {ids.random_hex(6) for _ in range(5000)}  # 30 KB: several refills of the pool
    assert len(seen) == 5000
    assert all(len(x) == 12 and int(x, 16) >= 0 for x in seen)


def test_uuid4_is_a_version_4_uuid() -> None:
    value = ids.uuid4()
    assert uuid.UUID(value).version == 4
    assert str(uuid.UUID(value)) == value


def test_a_forked_child_never_hands_out_its_parents_bytes() -> None:
    ids.random_hex(1)  # the parent's pool now holds unused bytes
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next bytes, then leave at once
        os.write(write, ids.random_hex(32).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 128).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 64
    assert child != ids.random_hex(32)  # the parent's next bytes: what the child would repeat


def test_ids_across_many_pool_refills_are_whole_and_distinct() -> None:
    values = [ids.random_hex(6) for _ in range(5000)]  # about 15 pools' worth
    assert all(len(v) == 12 and int(v, 16) >= 0 for v in values)
    assert len(set(values)) == len(values)
