"""Fixtures every provider test module uses."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A plain HTTP client for clients that talk to the sandbox over loopback."""
    with httpx.Client() as client:
        yield client
