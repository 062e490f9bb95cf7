from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sandbox_server import RunningSandbox, run_sandbox


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[RunningSandbox]:
    with run_sandbox() as running:
        yield running


@pytest.fixture
def sandbox(sandbox_server: RunningSandbox) -> RunningSandbox:
    """The session's sandbox, reset before the test."""
    sandbox_server.sb.reset()
    return sandbox_server
