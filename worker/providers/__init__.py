"""Provider modules, one per provider, registered by name (``PROVIDER`` in each module).

``base`` holds the types they speak in, ``fields`` the field-level parsing they share and
``_http`` their HTTP plumbing.
"""

from __future__ import annotations

import functools
import importlib

import httpx

from config.accounts import Account
from worker.providers.base import Provider

PROVIDER_NAMES = ("primevox", "ucx", "voipnow", "voipms", "callerip")


@functools.cache
def provider_class(name: str) -> type[Provider]:
    if name not in PROVIDER_NAMES:
        raise KeyError(f"unknown provider {name!r}")
    module = importlib.import_module(f"{__name__}.{name}")
    cls: type[Provider] = module.PROVIDER
    return cls


def provider_for(
    account: Account, http: httpx.Client, timeout: httpx.Timeout | None = None
) -> Provider:
    """The account's client; ``timeout`` (the configured one) replaces the provider's default."""
    return provider_class(account.provider)(account, http, timeout)
