"""Sandbox stand-in for callerip (placeholder until its module is written)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from .core import Sandbox


def routes(sb: Sandbox) -> list[BaseRoute]:
    return []
