"""The dashboard and /metrics against the whole system (web app, worker, beat, Valkey, SeaweedFS,
the sandbox): HTTP-level checks of authentication on every route and of the metrics, and a real
browser (Debian's Chromium driven by Playwright; skipped when /usr/bin/chromium is missing).

The browser test writes docs/screenshots/overview.png and docs/screenshots/fax.png for the README.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sandbox.pdf import make_pdf
from tests.conftest import BUCKET
from tests.system import API_TOKEN, ROOT, System, sandbox_fire, wait_for
from worker.domain import FaxRecord
from worker.store.records import dedup_key

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def system(
    tmp_path_factory: pytest.TempPathFactory, s3_server: str, sandbox_server: Any
) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("dashboard")
    s = System(
        tmp,
        s3_server,
        sandbox_server.url,
        BUCKET,
        env_overrides={
            "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
            # PrimeVox keeps faxes 30 days: with a 40-day margin every unarchived fax is at risk.
            "FAXRELAY_ARCHIVE_RISK_MARGIN": str(40 * 86400),
        },
    ).start()
    yield s
    s.stop()


# --- helpers ------------------------------------------------------------------------------------


def inbound(system: System, sandbox: Any, account: str = "pv", **fields: Any) -> str:
    """A fax at the sandbox announced to faxrelay by its webhook; returns faxrelay's id."""
    fax = dict(sandbox.control("inbound", provider="primevox", **fields))
    answer = sandbox_fire(
        sandbox.url,
        provider="primevox",
        kind="inbound",
        url=system.webhook_url(account),
        id=fax["id"],
    )
    assert answer["status"] == 200, answer
    raw = system.store().redis.get(dedup_key(f"in:{account}", fax["id"]))
    assert raw is not None
    return str(json.loads(raw)["id"])


def outbound(system: System, account: str, to: str) -> str:
    pdf = make_pdf(1, 0, label=f"dashboard {uuid.uuid4().hex}")
    with system.api() as api:
        answer = api.post(
            "/v1/faxes",
            json={
                "account": account,
                "to": to,
                "document": {"base64": base64.b64encode(pdf).decode()},
            },
        )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def scrape(system: System) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = httpx.get(f"{system.web_url}/metrics", timeout=30)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """Sum over every label set that includes ``labels``."""
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and all((k, w) in ls for k, w in labels.items())
    )


def login(system: System, token: str = API_TOKEN) -> httpx.Client:
    client = httpx.Client(base_url=system.web_url, timeout=30)
    answer = client.post("/login", data={"token": token, "next": "/"})
    assert answer.status_code == 303, answer.text
    return client


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "no CSRF token on the page"
    return match.group(1)


# --- HTTP: authentication ---------------------------------------------------------------------------


def test_login_sets_a_strict_httponly_cookie_and_refuses_a_wrong_token(system: System) -> None:
    with httpx.Client(base_url=system.web_url, timeout=30) as client:
        page = client.get("/login")
        assert page.status_code == 200 and 'name="token"' in page.text
        wrong = client.post("/login", data={"token": "not-the-token"})
        assert wrong.status_code == 403
        assert "not accepted" in wrong.text
        assert "set-cookie" not in wrong.headers
        right = client.post("/login", data={"token": API_TOKEN, "next": "/faxes"})
        assert right.status_code == 303 and right.headers["location"] == "/faxes"
        cookie = right.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert API_TOKEN not in right.headers["set-cookie"]
        assert client.get("/").status_code == 200
        # An open redirect through ?next= is refused.
        away = client.post("/login", data={"token": API_TOKEN, "next": "//evil.example/"})
        assert away.headers["location"] == "/"


def test_every_dashboard_route_needs_a_token(system: System, sandbox: Any) -> None:
    fax_id = inbound(system, sandbox)
    system.wait_state(fax_id, "archived")
    pages = [
        "/",
        "/faxes",
        f"/faxes/{fax_id}",
        f"/faxes/{fax_id}/pdf",
        f"/faxes/{fax_id}/preview.png",
    ]
    actions = [f"/faxes/{fax_id}/{a}" for a in ("retry", "cancel", "replay")] + ["/logout"]
    anon = httpx.Client(base_url=system.web_url, timeout=30)
    wrong = httpx.Client(
        base_url=system.web_url, timeout=30, headers={"authorization": "Bearer nope"}
    )
    bearer = httpx.Client(
        base_url=system.web_url, timeout=30, headers={"authorization": f"Bearer {API_TOKEN}"}
    )
    forged = httpx.Client(
        base_url=system.web_url, timeout=30, cookies={"faxrelay_session": "eyJzaWQiOiJ4In0.forged"}
    )
    for path in pages:
        answer = anon.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/login?next="), path
        assert forged.get(path).status_code == 303, path
        assert wrong.get(path).status_code == 403, path
        assert bearer.get(path).status_code in (200, 303), path  # /pdf redirects to S3
    for path in actions:
        assert anon.post(path).status_code == 401, path
        assert forged.post(path).status_code == 401, path
        assert wrong.post(path).status_code == 403, path
    # A session's POSTs need its CSRF token, and a foreign Origin is refused.
    session = login(system)
    page = session.get(f"/faxes/{fax_id}")
    token = csrf_of(page.text)
    assert session.post(f"/faxes/{fax_id}/replay").status_code == 403
    assert session.post(f"/faxes/{fax_id}/replay", data={"csrf": "x" * 64}).status_code == 403
    cross = session.post(
        f"/faxes/{fax_id}/replay", data={"csrf": token}, headers={"origin": "https://evil.example"}
    )
    assert cross.status_code == 403
    ok = session.post(f"/faxes/{fax_id}/replay", data={"csrf": token})
    assert ok.status_code == 303 and "notice=replay" in ok.headers["location"]
    # A bearer token needs no CSRF token (no ambient credential).
    assert bearer.post(f"/faxes/{fax_id}/replay").status_code == 303
    # Logging out ends the session cookie.
    assert session.post("/logout", data={"csrf": token}).status_code == 303
    assert session.get("/").status_code == 303
    # Unknown faxes are 404 behind the login, not before it.
    assert anon.get("/faxes/fx_nothere").status_code == 303
    assert bearer.get("/faxes/fx_nothere").status_code == 404
    # /metrics, /healthz need nothing.
    assert anon.get("/metrics").status_code == 200
    for client in (anon, wrong, bearer, forged, session):
        client.close()


# --- HTTP: metrics ------------------------------------------------------------------------------------


def test_metrics_move_after_a_webhook(system: System, sandbox: Any) -> None:
    before = scrape(system)
    fax_id = inbound(system, sandbox, pages=2)
    refused = httpx.post(system.webhook_url("pv", token="wrong"), data={"efaxID": "1"})
    assert refused.status_code == 401
    record = system.wait_state(fax_id, "archived")

    def moved() -> dict[Any, float] | None:
        after = scrape(system)
        download = value(
            after,
            "faxrelay_provider_calls_total",
            provider="primevox",
            operation="download",
            outcome="ok",
        )
        old = value(
            before,
            "faxrelay_provider_calls_total",
            provider="primevox",
            operation="download",
            outcome="ok",
        )
        return after if download > old else None

    after = wait_for(moved, 15, "the worker's provider call in /metrics")
    key = {"account": "pv", "route": "inbound"}
    assert value(after, "faxrelay_webhooks_total", **key, outcome="accepted") == (
        value(before, "faxrelay_webhooks_total", **key, outcome="accepted") + 1
    )
    assert value(after, "faxrelay_webhooks_total", **key, outcome="bad_token") == (
        value(before, "faxrelay_webhooks_total", **key, outcome="bad_token") + 1
    )
    assert (
        total(after, "faxrelay_webhook_ingest_seconds_count")
        >= total(before, "faxrelay_webhook_ingest_seconds_count") + 2
    )
    # Written by the worker process (multiprocess mode), read by the web app.
    assert value(after, "faxrelay_archive_latency_seconds_count") >= (
        value(before, "faxrelay_archive_latency_seconds_count") + 1
    )
    assert total(after, "faxrelay_provider_call_seconds_count", provider="primevox") > 0
    # Beat wakes the sweeper every half second (its first run can take a few seconds to come).
    wait_for(lambda: value(scrape(system), "faxrelay_sweeps_total") > 0, 30, "a sweep in /metrics")
    # Gauges computed from Redis at scrape time.
    archived = len(system.store().list(state="archived", limit=500).items)
    assert value(after, "faxrelay_faxes", direction="inbound", state="archived") == archived
    assert ("faxrelay_archive_backlog", ()) in after
    assert ("faxrelay_faxes_at_risk", ()) in after
    assert record.state == "archived"


# --- the charts --------------------------------------------------------------------------------------


def legend(page: str, box: str, series: str) -> str:
    """The figure a chart's legend shows for ``series`` (``box``: inbound, outbound, latency…)."""
    match = re.search(
        rf'id="box-{box}".*?data-series="{series}">.*?<b>([^<]*)</b>', page, flags=re.S
    )
    assert match, f"no {series!r} in the {box} chart's legend"
    return match.group(1)


def archived_inbound(system: System) -> int:
    """Received faxes archived so far: this module's system is fresh, so all within 24 h."""
    return len(system.store().list(direction="inbound", state="archived", limit=500).items)


def test_the_charts_show_what_was_archived(system: System, sandbox: Any) -> None:
    ids = [inbound(system, sandbox) for _ in range(3)]
    for fax_id in ids:
        system.wait_state(fax_id, "archived")

    client = login(system)

    def page_and_count() -> tuple[str, int] | None:
        before = archived_inbound(system)
        page = client.get("/").text
        return (page, before) if archived_inbound(system) == before else None

    page, archived = wait_for(page_and_count, 30, "a page read while no fax was archived")
    assert archived >= 3
    assert legend(page, "inbound", "archived") == str(archived)
    bars = re.findall(r'<g class="bar" data-hour="[^"]+" data-archived="(\d+)"', page)
    # the newest bars: this hour (and the one before, should the hour have turned meanwhile)
    assert sum(map(int, bars)) == archived and sum(map(int, bars[-2:])) >= 3
    assert legend(page, "latency", "p50") not in ("", "—")
    # The week's chart has the same faxes (this system is minutes old).
    week = client.get("/?span=7d").text
    client.close()
    assert legend(week, "inbound", "archived") == str(archived_inbound(system))
    assert 'id="span-24h"' in week and 'id="span-7d"' not in week


# --- the browser ------------------------------------------------------------------------------------


def _today_counts(system: System) -> tuple[Counter[tuple[str, str]], list[FaxRecord]]:
    from webhooks.stats import day_start, id_floor

    floor = id_floor(day_start())
    records = [r for r in system.store().list(limit=500).items if r.id >= floor]
    return Counter((str(r.direction), str(r.state)) for r in records), records


def test_dashboard_in_a_browser(system: System, sandbox: Any, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); browser test skipped")
    from playwright.sync_api import Page, expect, sync_playwright

    # The faxes to look at: one archived, one stuck (downloads keep failing), one failed
    # outbound, one outbound that waits at the provider (to cancel).
    archived_id = inbound(system, sandbox, pages=2)
    system.wait_state(archived_id, "archived")
    sandbox.control(
        "faults", provider="primevox", operation="download", kind="error", status=503, count=1000
    )
    stuck_id = inbound(system, sandbox)
    wait_for(
        lambda: system.record(stuck_id).attempts.get("download", 0) >= 2, 30, "two failed downloads"
    )
    sandbox.control("outcomes", provider="ucx", outcomes=["failed"])
    sandbox.control("duration", provider="ucx", seconds=1)
    failed_id = outbound(system, "ucx", "14695550108")
    reason = system.wait_state(failed_id, "failed", timeout=60).reason
    sandbox.control("duration", provider="ucx", seconds=120)
    waiting_id = outbound(system, "ucx", "14695550107")
    system.wait_state(waiting_id, "submitted", timeout=60)

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page: Page = context.new_page()
            page.set_default_timeout(15_000)
            page.on("dialog", lambda dialog: dialog.accept())

            # Log in: a wrong token is refused, the right one lands on the overview.
            page.goto(f"{system.web_url}/")
            assert "/login" in page.url
            page.fill("#token", "wrong-token")
            page.click("#login")
            expect(page.locator("#login-error")).to_contain_text("not accepted")
            page.fill("#token", API_TOKEN)
            page.click("#login")
            page.wait_for_url(f"{system.web_url}/")
            cookie = next(c for c in context.cookies() if c["name"] == "faxrelay_session")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

            # The overview's numbers are the records'.
            counts, records = _today_counts(system)
            for (direction, state), n in counts.items():
                cell = page.locator(f'[data-count="{direction}:{state}"]')
                assert cell.inner_text().strip() == str(n), (direction, state)
            directions = Counter(str(r.direction) for r in records)
            assert page.inner_text("#today-inbound") == str(directions["inbound"])
            assert page.inner_text("#today-outbound") == str(directions["outbound"])
            failed = sum(n for (_, state), n in counts.items() if state == "failed")
            assert page.inner_text("#failed-today") == str(failed)
            expect(page.locator("#failures")).to_contain_text(failed_id)
            expect(page.locator("#failures")).to_contain_text(reason)
            backlog = [r for r in records if r.direction == "inbound" and not r.final]
            assert page.inner_text("#backlog") == str(len(backlog))
            assert page.inner_text("#at-risk") == str(len(backlog))  # margin 40 d > 30 d kept
            expect(page.locator("#at-risk-list")).to_contain_text(stuck_id)
            expect(page.locator('#health tr[data-account="pv"]')).to_contain_text("inbound 200")
            # The charts: drawn, and their figures are the records'.
            for chart in ("inbound", "outbound", "latency", "errors"):
                expect(page.locator(f"#chart-{chart}")).to_be_visible()
            archived = page.locator('#box-inbound .legend[data-series="archived"] b')
            assert archived.inner_text() == str(archived_inbound(system))
            failed_out = page.locator('#box-outbound .legend[data-series="failed"] b')
            assert int(failed_out.inner_text()) >= 1  # the failed UCX send above
            # The stuck fax's failed downloads are provider errors of its account.
            expect(page.locator('#box-errors .legend[data-series="pv"]')).to_be_visible()
            page.screenshot(path=str(SCREENSHOTS / "overview.png"), full_page=True)
            page.click("#span-7d")
            page.wait_for_url("**/?span=7d*")
            expect(page.locator("#charts")).to_contain_text("last 7 days")
            assert archived.inner_text() == str(archived_inbound(system))

            # The received fax: its timeline and its first page.
            page.goto(f"{system.web_url}/faxes?direction=inbound&state=archived")
            page.click(f'#faxes a[href="/faxes/{archived_id}"]')
            page.wait_for_url(f"**/faxes/{archived_id}")
            timeline = page.locator("#timeline")
            for state in ("received", "fetching", "archived"):
                expect(timeline).to_contain_text(state)
            expect(page.locator("#raw")).to_contain_text("efaxID")
            preview = page.locator("#preview")
            expect(preview).to_be_visible()
            page.wait_for_function(
                "() => { const i = document.querySelector('#preview');"
                " return i && i.complete && i.naturalWidth > 100; }"
            )
            assert page.locator("#pdf-link").get_attribute("href") == f"/faxes/{archived_id}/pdf"
            page.screenshot(path=str(SCREENSHOTS / "fax.png"), full_page=True)
            page.click("#replay")
            expect(page.locator("#notice")).to_contain_text("replay: 200 outcome=duplicate")

            # The stuck fax: the provider recovers, an operator presses retry.
            sandbox.sb.faults.clear()
            page.goto(f"{system.web_url}/faxes/{stuck_id}")
            expect(page.locator("#state")).to_have_text(re.compile("received|fetching"))
            page.click("#retry")
            expect(page.locator("#notice")).to_contain_text("retry")
            record = system.wait_state(stuck_id, "archived", timeout=30)
            assert any(h["note"] == "retry by operator" for h in record.history)
            page.reload()
            expect(page.locator("#state")).to_have_text("archived")
            expect(page.locator("#timeline")).to_contain_text("retry by operator")

            # The failed outbound fax: its reason, and no retry or cancel button.
            page.goto(f"{system.web_url}/faxes/{failed_id}")
            expect(page.locator("#reason")).to_contain_text(reason)
            assert page.locator("#retry").count() == 0 and page.locator("#cancel").count() == 0

            # Cancel the fax waiting at UCX.
            page.goto(f"{system.web_url}/faxes/{waiting_id}")
            page.click("#cancel")
            expect(page.locator("#notice")).to_contain_text("cancelled")
            expect(page.locator("#state")).to_have_text("cancelled")
            assert system.record(waiting_id).state == "cancelled"
            assert sandbox.requests("ucx", "jobcancel")

            # The list: filters and paging.
            page.goto(f"{system.web_url}/faxes?direction=outbound&limit=1")
            rows = page.locator("#faxes tr[data-fax]")
            expect(rows).to_have_count(1)
            page.click("#next-page")
            expect(page.locator("#faxes tr[data-fax]")).to_have_count(1)
            assert "cursor=" in page.url
        finally:
            context.close()
