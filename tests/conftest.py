"""Fixtures: example models, an isolated Shipyard home, a real Prefect server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.service import wait_http
from shipyard.source import ModelClass
from targets import Target, _catalog, get_target
from targets.engine.cache import StepCache
from targets.pipeline import Engine, PipelineResult, check_request
from tests.models import save_convnet, save_multi_io

ROOT = Path(__file__).resolve().parents[1]
SHIPYARD = [sys.executable, "-m", "flows.cli"]

# Step processes run in their own folders; the step functions in tests/steps.py must import there.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session", autouse=True)
def warm_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's own shared warm servers (not the developer's), stopped at the end."""
    from targets.engine.servers import stop_servers

    folder = tmp_path_factory.mktemp("rt")
    folder.chmod(0o700)
    saved = os.environ.get("SHIPYARD_RUNTIME_DIR")
    os.environ["SHIPYARD_RUNTIME_DIR"] = str(folder)
    yield folder
    stop_servers()
    if saved is None:
        os.environ.pop("SHIPYARD_RUNTIME_DIR", None)
    else:
        os.environ["SHIPYARD_RUNTIME_DIR"] = saved


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "convnet": save_convnet(folder / "convnet.pt2"),
        "multi_io": save_multi_io(folder / "multi_io.pt2"),
    }


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server (SQLite) for the whole session; stopped at the end."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    if not wait_http(f"{url}/health", 120, proc):
        proc.kill()
        raise RuntimeError(f"prefect server did not start: {(home / 'server.log').read_text()[-2000:]}")
    yield url
    os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """One engine (warm step servers, one step cache) for the tests that call the pipeline directly."""
    root = tmp_path_factory.mktemp("engine")
    with Engine(cache=StepCache(root / "cache"), log_dir=root / "logs") as shared:
        yield shared


def run_targets(
    engine: Engine, source: Path, targets: list[str], workdir: Path, spec: dict | None = None
) -> PipelineResult:
    """Package `source` for `targets` through the real engine (no registry)."""
    return engine.run(check_request(source, spec, targets), workdir)


def register_variant(
    monkeypatch: pytest.MonkeyPatch,
    base: str,
    name: str,
    *,
    export: str | None = None,
    validate: str | None = None,
    timeout_s: int | None = None,
    model_class: ModelClass = ModelClass.FIXED_SHAPE,
) -> Target:
    """Register, for one test, target `base` under `name` with its export or validation function
    for `model_class` replaced ("tests.steps:function") and, if given, a shorter timeout for both."""
    target = get_target(base)
    build = target.build(model_class)
    assert build is not None
    limits = {"timeout_s": timeout_s} if timeout_s else {}
    if export:
        build = dataclasses.replace(
            build, export=dataclasses.replace(build.export, function=export, **limits)
        )
    if validate:
        build = dataclasses.replace(
            build, validate=dataclasses.replace(build.validate, function=validate, **limits)
        )
    variant = dataclasses.replace(target, name=name, builds={model_class: build})
    monkeypatch.setitem(_catalog._TARGETS, name, variant)
    return variant


@pytest.fixture(scope="session")
def tiny_lms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Trained tiny causal LMs, one per attention kind (tests/llm_models.py), as saved folders."""
    from tests.llm_models import ARCHITECTURES, save_tiny_lm

    root = tmp_path_factory.mktemp("tiny-lms")
    return {a: save_tiny_lm(root / a, a) for a in ARCHITECTURES}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh SHIPYARD_HOME (runs, default registry) for one test."""
    path = tmp_path / "shipyard-home"
    path.mkdir()
    return path


def run_cli(
    args: list[str],
    home: Path,
    prefect_api: str | None = None,
    timeout: float = 900,
    extra_env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHIPYARD_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.update(extra_env or {})
    env.pop("SHIPYARD_REGISTRY", None)
    if prefect_api:
        env["PREFECT_API_URL"] = prefect_api
    else:
        env.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [*SHIPYARD, *args], capture_output=True, text=True, env=env, cwd=cwd or ROOT, timeout=timeout
    )


def registry_files(home: Path) -> list[str]:
    root = home / "registry"
    return (
        sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        if root.exists()
        else []
    )


def parse_json(stdout: str) -> dict:
    return json.loads(stdout)


@pytest.fixture(scope="session")
def convnet_all(models: dict[str, Path], prefect_api: str, tmp_path_factory: pytest.TempPathFactory):
    """The conv net packaged for every target through the real Prefect server, once per session."""
    home = tmp_path_factory.mktemp("convnet-home")
    result = run_cli(["package", str(models["convnet"]), "--json"], home, prefect_api)
    return home, result


S3_KEYS = {
    "AWS_ACCESS_KEY_ID": "shipyard-test",
    "AWS_SECRET_ACCESS_KEY": "shipyard-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class Seaweed:
    """A real SeaweedFS S3 endpoint on 127.0.0.1 that tests can stop and start again."""

    def __init__(self, root: Path) -> None:
        from infra.seaweed import free_port, internal_ports

        self.root = root
        self.port = free_port()
        self.ports = internal_ports()
        self.bucket = "shipyard"
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {**S3_KEYS, "AWS_ENDPOINT_URL": self.endpoint}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from infra.seaweed import start_seaweedfs, wait_for_s3

        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            self.proc = start_seaweedfs(
                self.root / "data", self.port, self.bucket, self.root / "weed.log", self.ports
            )
            wait_for_s3(self.endpoint, self.bucket)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    server = Seaweed(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(seaweed: Seaweed, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point boto3 in this process at the test SeaweedFS."""
    for key, value in seaweed.env.items():
        monkeypatch.setenv(key, value)
    return seaweed.env


def unique_prefix() -> str:
    import uuid

    return f"t-{uuid.uuid4().hex[:10]}"
