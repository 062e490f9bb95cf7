"""Behind a reverse proxy: the client's address and scheme, believed only from trusted hops.

A TLS-terminating proxy talks plain HTTP to the app and says what it received in
``X-Forwarded-Proto`` and ``X-Forwarded-For``. The app takes those headers from the hops named in
``FAXRELAY_FORWARDED_ALLOW_IPS`` (addresses or networks, ``*`` for any) and from no one else, so a
client cannot claim another address or scheme by sending the headers itself. With them believed,
``request.url.scheme`` is ``https``, which the dashboard needs for its Secure cookie and its Origin
check, and ``request.client`` (and uvicorn's access log) is the real client.

The work is uvicorn's ``ProxyHeadersMiddleware`` (its public API), applied by the app itself so
the setting lives with the others and holds under any ASGI server. uvicorn applies the same
middleware on its own unless started with ``--no-proxy-headers``, trusting loopback (or
``$FORWARDED_ALLOW_IPS``) whatever this setting says: every command that starts the web app
passes that flag.

The ``Host`` header is taken as the proxy sends it (uvicorn reads no ``X-Forwarded-Host``): the
proxy must pass the client's ``Host`` through (nginx: ``proxy_set_header Host $http_host``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from starlette.types import ASGIApp
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware


def trusting_proxies(app: ASGIApp, allow_ips: Sequence[str]) -> ASGIApp:
    """``app`` reading X-Forwarded-* from the hops in ``allow_ips``; ``app`` itself when none."""
    if not allow_ips:
        return app
    # uvicorn types its middleware with its own ASGI protocol types; the callables are the same.
    return cast(ASGIApp, ProxyHeadersMiddleware(cast(Any, app), trusted_hosts=list(allow_ips)))
