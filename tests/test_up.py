"""`faxrelay up`: starts everything, is ready, stops cleanly, and a second start finds the data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.system import wait_for
from worker.io.archive import s3_client
from worker.store.records import FaxStore

ROOT = Path(__file__).resolve().parent.parent


def children(pid: int) -> set[int]:
    """All live descendants of ``pid`` (read from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_up(state_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAXRELAY_")}
    env["PYTHONPATH"] = str(ROOT)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "webhooks.cli", "up", "--sandbox", "--port", str(port),
             "--state-dir", str(state_dir)],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
        )  # fmt: skip


def wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    def ready() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, 60, "/readyz")
    # endpoints.json is written once the worker consumes too
    wait_for(lambda: (log.parent / "state" / "endpoints.json").exists(), 60, "endpoints.json")


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGINT)
    return proc.wait(60)


def test_up_runs_stops_cleanly_and_keeps_its_data(tmp_path: Path) -> None:
    from tests.sandbox_server import free_port

    state_dir, log, port = tmp_path / "state", tmp_path / "up.log", free_port()
    proc = start_up(state_dir, port, log)
    try:
        wait_ready(port, proc, log)
        endpoints = json.loads((state_dir / "endpoints.json").read_text())
        assert endpoints["web_url"] == f"http://127.0.0.1:{port}"
        # Files that hold a secret are their owner's only; the embedded Redis wants a password.
        secret_files = ["endpoints.json", "sandbox-api-token", "sandbox-webhook-token"]
        secret_files += ["sandbox.toml", "redis-password", "redis/faxrelay-redis.conf"]
        for name in secret_files:
            assert (state_dir / name).stat().st_mode & 0o777 == 0o600, name
        import redis

        bare = urlsplit(endpoints["redis_url"])
        assert bare.password
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=bare.hostname or "", port=bare.port or 0).ping()
        token = (state_dir / "sandbox-webhook-token").read_text().strip()
        sandbox = endpoints["sandbox_url"]
        fax = httpx.post(f"{sandbox}/_sandbox/inbound", json={"provider": "primevox"}).json()
        fired = httpx.post(
            f"{sandbox}/_sandbox/fire",
            json={
                "provider": "primevox",
                "kind": "inbound",
                "id": fax["id"],
                "url": f"{endpoints['web_url']}/webhooks/primevox/inbound?token={token}",
            },
            timeout=30,
        ).json()
        assert fired["status"] == 200
        fax_id = fired["headers"]["faxrelay-fax-id"]
        store = FaxStore.from_url(endpoints["redis_url"])
        record = wait_for(
            lambda: (r := store.find(fax_id)) and r.state == "archived" and r, 60, "archived"
        )
        store.redis.close()
        descendants = children(proc.pid)
        assert len(descendants) >= 6  # redis, s3, sandbox, web, worker (+ pool), beat
    finally:
        code = stop(proc)
    assert code == 0, log.read_text()[-3000:]
    left = [pid for pid in descendants if alive(pid)]
    assert left == [], f"processes left behind: {left}"

    # A second start finds the record and the archived PDF.
    proc = start_up(state_dir, port, log)
    try:
        wait_ready(port, proc, log)
        endpoints = json.loads((state_dir / "endpoints.json").read_text())
        store = FaxStore.from_url(endpoints["redis_url"])
        again = store.get(fax_id)
        assert again.state == "archived" and again.sha256 == fax["sha256"]
        s3 = s3_client(endpoints["s3_endpoint_url"])
        body = s3.get_object(Bucket=endpoints["s3_bucket"], Key=record.archive["key"])["Body"]
        import hashlib

        assert hashlib.sha256(body.read()).hexdigest() == fax["sha256"]
        store.redis.close()
    finally:
        assert stop(proc) == 0


def test_config_check_names_the_bad_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[accounts.main]\nprovider = "primevox"\nbase_url = "https://x"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAXRELAY_")}
    env.update(PYTHONPATH=str(ROOT), FAXRELAY_CONFIG=str(config))
    result = subprocess.run(
        [sys.executable, "-m", "webhooks.cli", "config", "check"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert 'accounts.main: provider "primevox" needs auth' in result.stderr
