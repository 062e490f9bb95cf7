"""``faxrelay_client`` stands alone: it imports nothing of the service's packages, so a caller
whose own code has top-level ``config`` or ``worker`` packages can use it beside them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.system import ROOT

CALLER = """
import sys
import faxrelay_client
from faxrelay_client import Client, Document, verify_event
from faxrelay_client.models import SendFax

import config, worker
assert config.MINE and worker.MINE, "the caller's own packages"
assert not any(name.startswith(("config.", "worker.", "webhooks")) for name in sys.modules)
body = SendFax(account="main", to=15552345678, document=Document(url="https://x/a.pdf"))
assert body.to == "15552345678"
with Client("http://127.0.0.2:9", "token") as client:
    pass
print("ok")
"""


def test_the_client_imports_beside_a_callers_own_config_and_worker(tmp_path: Path) -> None:
    for name in ("config", "worker"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("MINE = True\n")
    # The caller's directory first on the path, as a script's own directory is; then faxrelay's.
    run = subprocess.run(
        [sys.executable, "-c", CALLER],
        capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False,
        env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
