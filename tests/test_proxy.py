"""The web app behind a real TLS-terminating reverse proxy (Debian's nginx) on loopback.

Three loopback addresses keep the parties apart: the client connects from 127.0.0.2, nginx
terminates TLS and connects to the app from 127.0.0.3 (``proxy_bind``), the app listens on
127.0.0.1. nginx serves two ports: one in front of an app that trusts 127.0.0.3
(``FAXRELAY_FORWARDED_ALLOW_IPS``), one in front of an app with the default trust (loopback's
127.0.0.1 and ::1 only), so the same proxy is believed by one and not by the other. The client
address the app sees is read from uvicorn's access log, as an operator would.

Skipped when nginx is missing (.ci/run installs Debian's); the browser test also needs Debian's
Chromium and writes docs/screenshots/proxy-login.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest
import yaml

from config.embedded import ManagedProcess, free_port, wait_until
from tests.system import API_TOKEN, ROOT, wait_for

CLIENT = "127.0.0.2"  # where the client connects from
PROXY = "127.0.0.3"  # where nginx connects to the app from
SPOOFED = "198.51.100.7"  # an address a client claims in its own X-Forwarded-For
METRICS_TOKEN = "test-metrics-token-71c4"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "docs" / "screenshots" / "proxy-login.png"


def find_nginx() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


@dataclass
class Web:
    port: int
    log: Path
    proc: ManagedProcess

    def stop(self) -> None:
        self.proc.stop()
        self.proc.sink.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def clients_seen(self, path: str) -> list[str]:
        """The client addresses of the access log's requests for ``path``."""
        seen = []
        for line in self.log.read_text().splitlines():
            _, _, text = line.partition("] ")
            try:
                entry = json.loads(text)
            except ValueError:
                continue
            if entry.get("logger") != "uvicorn.access":
                continue
            match = re.match(r'(\S+):\d+ - "\w+ (\S+) ', entry["message"])
            if match and match[2].split("?")[0] == path:
                seen.append(match[1])
        return seen


@dataclass
class Stack:
    trusted: Web  # believes the proxy
    default: Web  # default trust: loopback 127.0.0.1 and ::1, not the proxy's 127.0.0.3
    trusted_https: str  # nginx in front of `trusted`
    default_https: str  # nginx in front of `default`
    cert: Path

    def client(self, base_url: str) -> httpx.Client:
        """A client that checks the proxy's certificate and connects from CLIENT."""
        context = ssl.create_default_context(cafile=str(self.cert))
        transport = httpx.HTTPTransport(local_address=CLIENT, verify=context)
        return httpx.Client(base_url=base_url, transport=transport, timeout=30)


def start_web(tmp: Path, name: str, env: dict[str, str]) -> Web:
    port = free_port()
    log = tmp / f"{name}.log"
    sink = open(log, "w")  # noqa: SIM115 - closed by Web.stop
    proc = ManagedProcess(
        name,
        [sys.executable, "-m", "uvicorn", "--factory", "webhooks.app:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--no-proxy-headers"],
        sink=sink, env=env, cwd=str(ROOT),
    ).start()  # fmt: skip
    return Web(port, log, proc)


NGINX_CONF = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {tmp}/nginx-access.log;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    client_body_buffer_size 1m;
    proxy_max_temp_file_size 0;
    ssl_certificate {tmp}/cert.pem;
    ssl_certificate_key {tmp}/key.pem;
    {servers}
}}
"""
# The usual TLS-terminating setup: the client's Host passed through, the client's address appended
# to X-Forwarded-For, the scheme it used in X-Forwarded-Proto.
NGINX_SERVER = """
    server {{
        listen 127.0.0.1:{listen} ssl;
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_bind {proxy};
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
"""


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, redis_server: str, s3_server: str
) -> Iterator[Stack]:
    nginx = find_nginx()
    if nginx is None or shutil.which("openssl") is None:
        pytest.skip("nginx or openssl is missing (.ci/run installs nginx): proxy tests skipped")
    tmp = tmp_path_factory.mktemp("proxy")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(tmp / "key.pem"), "-out", str(tmp / "cert.pem"), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    base = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FAXRELAY_")},
        "FAXRELAY_REDIS_URL": redis_server,
        "FAXRELAY_S3_ENDPOINT_URL": s3_server,
        "FAXRELAY_S3_BUCKET": "faxrelay-test",
        "FAXRELAY_API_TOKENS": API_TOKEN,
        "FAXRELAY_LOG_FORMAT": "json",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp),
        "PYTHONPATH": str(ROOT),
    }
    webs = [
        start_web(tmp, "trusted", {**base, "FAXRELAY_FORWARDED_ALLOW_IPS": PROXY,
                                   "FAXRELAY_METRICS_TOKEN": METRICS_TOKEN}),
        start_web(tmp, "default", base),
    ]  # fmt: skip
    ports = [free_port(), free_port()]
    servers = "".join(
        NGINX_SERVER.format(listen=port, upstream=web.port, proxy=PROXY)
        for port, web in zip(ports, webs, strict=True)
    )
    (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, servers=servers))
    proxy = ManagedProcess(
        "nginx",
        [nginx, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "nginx-error.log"),
         "-g", "daemon off;"],
        sink=open(tmp / "nginx.out", "w"),  # noqa: SIM115
    ).start()  # fmt: skip
    https = [f"https://127.0.0.1:{port}" for port in ports]
    running = Stack(webs[0], webs[1], https[0], https[1], tmp / "cert.pem")
    try:
        for web in webs:
            wait_until(partial(_ok, f"{web.url}/healthz"), 30, web.proc.name, web.proc)
        for url in https:
            wait_until(partial(_ok, f"{url}/healthz", running.cert), 30, "nginx", proxy)
        yield running
    finally:
        proxy.stop()
        for web in webs:
            web.stop()


def _ok(url: str, cert: Path | None = None) -> bool:
    try:
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(cert)) if cert else True
        )
        return httpx.get(url, timeout=2, verify=verify).status_code == 200
    except httpx.HTTPError:
        return False


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "no CSRF token on the page"
    return match.group(1)


def session_cookie(answer: httpx.Response) -> str:
    cookies = [
        v for v in answer.headers.get_list("set-cookie") if v.startswith("faxrelay_session=")
    ]
    assert len(cookies) == 1, answer.headers
    return cookies[0]


def attributes(cookie: str) -> set[str]:
    return {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}


# --- a trusted proxy ---------------------------------------------------------------------------


def test_login_through_a_trusted_tls_proxy(stack: Stack) -> None:
    https = stack.trusted_https
    with stack.client(https) as client:
        answer = client.get("/")
        assert answer.status_code == 303 and answer.headers["location"] == "/login?next=%2F"
        assert client.get("/login").status_code == 200
        # The browser's Origin is the proxy's https origin; the X-Forwarded-For a client sends
        # itself is kept in the chain but not believed.
        answer = client.post(
            "/login",
            data={"token": API_TOKEN, "next": "/"},
            headers={"origin": https, "x-forwarded-for": SPOOFED},
        )
        assert answer.status_code == 303, answer.text
        cookie = session_cookie(answer)
        assert {"secure", "httponly", "samesite"} <= attributes(cookie)
        assert "samesite=strict" in cookie.lower()
        page = client.get("/")
        assert page.status_code == 200 and 'action="/logout"' in page.text  # logged in
        csrf = csrf_of(page.text)

        # A POST from any other origin is refused, including the app's own plain-HTTP one.
        for other in (stack.trusted.url, https.replace("https:", "http:"), "https://127.0.0.5"):
            refused = client.post("/logout", data={"csrf": csrf}, headers={"origin": other})
            assert refused.status_code == 403, other
            assert "cross-site request refused" in refused.text
        answer = client.post("/logout", data={"csrf": csrf}, headers={"origin": https})
        assert answer.status_code == 303 and answer.headers["location"] == "/login"
        assert "secure" in attributes(session_cookie(answer))  # the deletion matches the cookie

    # The app saw the real client, neither the proxy nor the address the client made up.
    wait_for(lambda: len(stack.trusted.clients_seen("/logout")) >= 4, 10, "the access log")
    assert stack.trusted.clients_seen("/logout") == [CLIENT] * 4
    assert set(stack.trusted.clients_seen("/login")) == {CLIENT}


def test_a_client_cannot_claim_https_or_an_address_itself(stack: Stack) -> None:
    # Straight to the app (not through the proxy): the client is no trusted hop.
    transport = httpx.HTTPTransport(local_address=CLIENT)
    with httpx.Client(base_url=stack.trusted.url, transport=transport, timeout=30) as client:
        answer = client.post(
            "/login",
            data={"token": API_TOKEN, "next": "/healthz"},
            headers={"x-forwarded-proto": "https", "x-forwarded-for": SPOOFED},
        )
        assert answer.status_code == 303
        assert "secure" not in attributes(session_cookie(answer))
        assert client.get("/healthz", headers={"x-forwarded-for": SPOOFED}).status_code == 200
    wait_for(lambda: CLIENT in stack.trusted.clients_seen("/healthz"), 10, "the access log")
    assert SPOOFED not in stack.trusted.clients_seen("/healthz")


# --- an untrusted proxy ------------------------------------------------------------------------


def test_a_proxy_that_is_not_trusted_is_not_believed(stack: Stack) -> None:
    https = stack.default_https
    with stack.client(https) as client:
        # The app takes the request for plain HTTP: the browser's https Origin does not match,
        # which is how the login fails behind a proxy nobody configured.
        refused = client.post(
            "/login", data={"token": API_TOKEN, "next": "/"}, headers={"origin": https}
        )
        assert refused.status_code == 403 and "cross-site request refused" in refused.text
        answer = client.post("/login", data={"token": API_TOKEN, "next": "/"})
        assert answer.status_code == 303
        assert "secure" not in attributes(session_cookie(answer))
    seen = wait_for(lambda: stack.default.clients_seen("/login"), 10, "access log")
    assert set(seen) == {PROXY}


# --- /metrics ------------------------------------------------------------------------------------


def test_metrics_need_the_metrics_token_when_one_is_set(stack: Stack) -> None:
    with stack.client(stack.trusted_https) as client:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": API_TOKEN}):
            refused = client.get("/metrics", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert "faxrelay_" not in refused.text
        answer = client.get("/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
        assert answer.status_code == 200 and "faxrelay_" in answer.text
    # Without a metrics token /metrics stays open (scrapers on a private network).
    with stack.client(stack.default_https) as client:
        assert client.get("/metrics").status_code == 200


# --- every way of starting the web app leaves the proxy headers to the app ----------------------


def test_deployment_commands_leave_proxy_headers_to_the_app() -> None:
    """uvicorn would otherwise apply its own proxy-header trust (loopback) before the app's."""
    procfile = (ROOT / "Procfile").read_text()
    web = next(line for line in procfile.splitlines() if line.startswith("web:"))
    commands = {"Procfile": web}
    for name in ("compose.yaml", "compose.ha.yaml"):
        service = yaml.safe_load((ROOT / name).read_text())["services"]["web"]
        commands[name] = " ".join(service["command"])
    cmd = next(
        line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")
    )
    commands["Dockerfile"] = " ".join(json.loads(cmd.removeprefix("CMD ")))
    for name, command in commands.items():
        assert "webhooks.app:create_app" in command, name
        assert "--no-proxy-headers" in command.split(), name


# --- a real browser, for the screenshot -----------------------------------------------------------


def test_login_through_the_proxy_in_a_browser(stack: Stack, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); browser test skipped")
    from playwright.sync_api import sync_playwright

    from tests.test_dashboard import CHROMIUM_ARGS

    https = stack.trusted_https
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800},
            ignore_https_errors=True,  # the test's self-signed certificate
        )
        try:
            page = context.new_page()
            page.set_default_timeout(15_000)
            page.goto(f"{https}/")
            assert "/login" in page.url
            page.fill("#token", API_TOKEN)
            page.click("#login")
            page.wait_for_url(f"{https}/")
            cookie = next(c for c in context.cookies() if c["name"] == "faxrelay_session")
            assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            assert page.locator("form[action='/logout']").count() >= 1
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            context.close()
