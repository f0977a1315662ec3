"""Scale-out on Prefect's own machinery, with the service exactly as `make up` / `make worker` start it:
PostgreSQL, SeaweedFS, the Prefect server, two workers with separate home folders, the webhook.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import pytest

from flows.signing import signed_body_headers
from infra._pidfile import live_pid
from registry import Registry
from tests.conftest import ROOT, free_port
from tests.test_webhook import flow_run_of

SECRET = "scale-webhook-secret-0123456789"
PREFECT_AUTH = ("shipyard", "scale-prefect-auth-0123456789")  # the server refuses calls without it
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class Service:
    """`python -m infra.service` in a state folder of its own, on free ports."""

    def __init__(self, state: Path) -> None:
        from infra.seaweed import free_port as free_s3_port

        self.state = state
        ports = {
            "PREFECT": free_port(),
            "WEBHOOK": free_port(),
            "POSTGRES": free_port(),
            "S3": free_s3_port(),
        }
        self.api = f"http://127.0.0.1:{ports['PREFECT']}/api"
        self.webhook = f"http://127.0.0.1:{ports['WEBHOOK']}"
        self.env = {
            **os.environ,
            "SHIPYARD_SERVICE_DIR": str(state),
            **{f"SHIPYARD_{k}_PORT": str(v) for k, v in ports.items()},
            "SHIPYARD_WEBHOOK_SECRET": SECRET,
            "PREFECT_API_AUTH_STRING": ":".join(PREFECT_AUTH),
            "SHIPYARD_RUNTIME_DIR": str(state.parent / "run"),  # its workers' warm servers, apart
        }
        for key in ("PREFECT_API_URL", "SHIPYARD_REGISTRY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            self.env.pop(key, None)

    def run(self, command: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "infra.service", command],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
        return done.stdout

    def pid(self, name: str) -> int:
        pid = live_pid(self.state / f"{name}.pid")
        assert pid is not None, f"{name} is not running"
        return pid

    def registry_env(self) -> dict[str, str]:
        """What a process needs to read the service's registry (SeaweedFS)."""
        return {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.env['SHIPYARD_S3_PORT']}",
            "AWS_ACCESS_KEY_ID": "shipyard",
            "AWS_SECRET_ACCESS_KEY": (self.state / "s3.secret").read_text().strip(),
            "AWS_DEFAULT_REGION": "us-east-1",
            "SHIPYARD_REGISTRY": "s3://shipyard/registry",
        }


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    folder = Path(tempfile.mkdtemp(prefix="shipyard-scale-"))
    folder.chmod(0o755)  # as root, PostgreSQL runs as a system user that must reach its data
    svc = Service(folder / "service")
    try:
        started = svc.run("up")
        assert f"PostgreSQL: 127.0.0.1:{svc.env['SHIPYARD_POSTGRES_PORT']}" in started, started
        assert "started worker-2" in svc.run("worker")
        _wait_online(svc, {"worker-1", "worker-2"})
        yield svc
    finally:
        svc.run("down")
        shutil.rmtree(folder, ignore_errors=True)


def _wait_online(svc: Service, names: set[str], timeout: float = 120) -> None:
    """Until the pool lists these workers as online (they have polled it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = httpx.post(
            f"{svc.api}/work_pools/shipyard/workers/filter", json={}, timeout=30, auth=PREFECT_AUTH
        ).json()
        if names <= {w["name"] for w in workers if w["status"] == "ONLINE"}:
            return
        time.sleep(1)
    raise AssertionError(f"workers {sorted(names)} not online after {timeout} s")


def _post(svc: Service, name: str, model: bytes, fields: dict[str, str]) -> dict:
    request = httpx.Request(
        "POST", f"{svc.webhook}/v1/models/{name}", files={"file": ("m", model)}, data=fields
    )
    body = request.read()
    path = f"/v1/models/{name}"
    headers = {
        **request.headers,
        **signed_body_headers(SECRET, "POST", path, body, request.headers["Content-Type"]),
    }
    answer = httpx.post(request.url, content=body, headers=headers, timeout=60)
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


def _flow_run(svc: Service, flow_run_id: str) -> dict:
    return dict(httpx.get(f"{svc.api}/flow_runs/{flow_run_id}", timeout=30, auth=PREFECT_AUTH).json())


def _wait_final(svc: Service, flow_run_id: str, timeout: float = 600, until: set[str] = FINAL) -> dict:
    """The flow run once its state is one of `until` (its last state if time runs out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = _flow_run(svc, flow_run_id)
        if run["state"]["type"] in until:
            return run
        time.sleep(2)
    return run


def _state(run: dict) -> str:
    return f"{run['state']['type']}: {run['state'].get('message')}"


def _taken_by(svc: Service, flow_run_id: str) -> list[str]:
    """The workers whose logs say they started this flow run (not counting submissions another
    worker won first: the loser logs "Aborted submission")."""
    taken = []
    for log in sorted(svc.state.glob("worker-*.log")):
        text = log.read_text(errors="replace")
        tried = text.count(f"submitting flow run '{flow_run_id}'")
        if tried > text.count(f"Aborted submission of flow run '{flow_run_id}'"):
            taken.append(log.stem)
    return taken


def _registry(svc: Service) -> Registry:
    """The service's registry, with its own keys (boto3's default session keeps the first ones it saw)."""
    import boto3

    from registry._s3 import S3Backend

    env = svc.registry_env()
    client = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    ).client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    return Registry(S3Backend("shipyard", "registry", client=client))


def test_the_prefect_api_is_closed_and_a_run_cannot_change_what_a_worker_executes(
    service: Service, tmp_path: Path
) -> None:
    """Without the auth string every API call is 401 (health probes stay open). With it, job
    variables that would change the worker's command or environment are refused when the run
    is made from the deployment, and ignored by the worker when it is made straight through
    /flow_runs/ (which validates nothing): the flow itself runs, and the command does not."""
    assert httpx.post(f"{service.api}/flow_runs/filter", json={}, timeout=30).status_code == 401
    assert httpx.get(f"{service.api}/deployments/", timeout=30).status_code == 401
    wrong = ("shipyard", "not-the-secret")
    assert httpx.post(f"{service.api}/flow_runs/filter", json={}, timeout=30, auth=wrong).status_code == 401
    assert httpx.get(f"{service.api}/health", timeout=30).status_code == 200
    deployment = httpx.get(
        f"{service.api}/deployments/name/package-model/package-model", timeout=30, auth=PREFECT_AUTH
    ).json()
    marker = tmp_path / "the-command-ran"
    hostile = {"command": f"touch {marker}", "env": {"SHIPYARD_REGISTRY": (tmp_path / "evil").as_uri()}}
    parameters = {"source": str(tmp_path / "missing.pt2")}
    refused = httpx.post(
        f"{service.api}/deployments/{deployment['id']}/create_flow_run",
        json={"parameters": parameters, "job_variables": hostile},
        timeout=30,
        auth=PREFECT_AUTH,
    )
    assert refused.status_code == 422, refused.text
    created = httpx.post(
        f"{service.api}/flow_runs/",
        json={
            "flow_id": deployment["flow_id"],
            "deployment_id": deployment["id"],
            "work_pool_name": "shipyard",
            "work_queue_name": "default",
            "parameters": parameters,
            "job_variables": hostile,
            "state": {"type": "SCHEDULED"},
        },
        timeout=30,
        auth=PREFECT_AUTH,
    )
    assert created.status_code == 201, created.text
    run = _wait_final(service, created.json()["id"], timeout=300)
    assert run["state"]["type"] == "FAILED", _state(run)  # the flow ran and refused the missing source
    assert "missing.pt2" in (run["state"].get("message") or ""), _state(run)
    assert not marker.exists() and not (tmp_path / "evil").exists()


def test_two_workers_share_four_runs_each_run_once(service: Service, models: dict[str, Path]) -> None:
    model = models["multi_io"].read_bytes()
    answers = [_post(service, f"shared-{i}", model, {"targets": "triton"}) for i in range(4)]
    flow_runs = [flow_run_of(service.api, a["run_id"], auth=PREFECT_AUTH) for a in answers]
    finished = [_wait_final(service, f) for f in flow_runs]
    assert [r["state"]["type"] for r in finished] == ["COMPLETED"] * 4, [_state(r) for r in finished]
    assert [r["run_count"] for r in finished] == [1] * 4  # each executed once
    takers = [_taken_by(service, f) for f in flow_runs]
    assert all(len(t) == 1 for t in takers), takers  # one worker each
    assert {t[0] for t in takers} == {"worker-1", "worker-2"}, takers  # and both workers shared them
    registry = _registry(service)
    assert [registry.versions(f"shared-{i}") for i in range(4)] == [[1]] * 4
    for worker in ("worker-1", "worker-2"):  # its runs' steps never ran more than its 2 slots at once
        runs = [f for f, t in zip(flow_runs, takers, strict=True) if t == [worker]]
        assert _most_steps_at_once(service, runs) <= 2
    for worker in ("worker-1", "worker-2"):  # separate homes: each kept its own step cache
        assert (service.state / worker / "home").is_dir()
    # every flow run of both workers forked its steps from the same warm servers (one per family),
    # not from servers of its own (Prefect gives each run a folder of its own on PYTHONPATH)
    sockets = [p.name for p in (service.state.parent / "run").glob("*.sock")]
    families = sorted(name.split("-")[0] for name in sockets if not name.startswith("flows-"))
    assert families and len(families) == len(set(families)), sockets
    # and each flow run's own process was forked from its worker's warm flow server, one per worker
    origins = [_process_origin(service, f) for f in flow_runs]
    assert all(o.startswith("forked from the worker's warm server") for o in origins), origins
    by_worker = {t[0]: set() for t in takers}
    for taker, origin in zip(takers, origins, strict=True):
        by_worker[taker[0]].add(origin)
    assert all(len(o) == 1 for o in by_worker.values()), by_worker  # one server per worker
    assert len(set.union(*by_worker.values())) == 2, by_worker


def _process_origin(svc: Service, flow_run_id: str) -> str:
    """What the run logged about its process: forked from a warm server, or a fresh interpreter."""
    logs = httpx.post(
        f"{svc.api}/logs/filter",
        json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200},
        timeout=30,
        auth=PREFECT_AUTH,
    ).json()
    found = [log["message"] for log in logs if log["message"].startswith("flow run process: ")]
    assert len(found) == 1, [log["message"] for log in logs]
    return str(found[0].removeprefix("flow run process: "))


def _most_steps_at_once(svc: Service, flow_run_ids: list[str]) -> int:
    """The largest number of step task runs of these flow runs that overlapped in time."""
    task_runs = httpx.post(
        f"{svc.api}/task_runs/filter",
        json={"flow_runs": {"id": {"any_": flow_run_ids}}, "limit": 200},
        timeout=30,
        auth=PREFECT_AUTH,
    ).json()
    edges = []
    for t in task_runs:
        if t["start_time"] and t["end_time"] and not t["name"].startswith(("publish", "record-report")):
            edges += [
                (datetime.fromisoformat(t["start_time"]), 1),
                (datetime.fromisoformat(t["end_time"]), -1),
            ]
    running = most = 0
    for _, change in sorted(edges, key=lambda e: (e[0], e[1])):  # an end before a start at the same instant
        running += change
        most = max(most, running)
    return most


def _running(svc: Service, name: str, model: Path) -> str:
    """Submit `model` for two targets; its flow run id once a worker runs it."""
    answer = _post(svc, name, model.read_bytes(), {"targets": "triton,ort-web"})
    flow_run_id = flow_run_of(svc.api, answer["run_id"], auth=PREFECT_AUTH)
    deadline = time.monotonic() + 300
    while not _taken_by(svc, flow_run_id) or _flow_run(svc, flow_run_id)["state"]["type"] != "RUNNING":
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.5)
    return flow_run_id


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and everything under it, as if its machine died."""
    parent = psutil.Process(pid)
    for proc in [*parent.children(recursive=True), parent]:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            continue


def test_a_killed_worker_run_is_rerun_elsewhere_and_published_once(
    service: Service, models: dict[str, Path]
) -> None:
    flow_run_id = _running(service, "survivor", models["convnet"])
    (victim,) = _taken_by(service, flow_run_id)
    time.sleep(3)  # mid-run: steps under way
    _kill_tree(service.pid(victim))
    try:
        run = _wait_final(service, flow_run_id, timeout=600, until={"COMPLETED", "FAILED", "CANCELLED"})
        assert run["state"]["type"] == "COMPLETED", _state(run)  # CRASHED on the way, not at the end
        assert run["run_count"] == 2  # once on the dead worker, once more elsewhere
        assert _taken_by(service, flow_run_id) == ["worker-1", "worker-2"]  # the dead one, then the other
        states = httpx.get(
            f"{service.api}/flow_run_states/",
            params={"flow_run_id": flow_run_id},
            timeout=30,
            auth=PREFECT_AUTH,
        )
        assert "CRASHED" in [s["type"] for s in states.json()]  # detected as crashed, then re-queued
        assert _registry(service).versions("survivor") == [1]
    finally:
        service.run("worker")  # the pool gets its second worker back for the tests after this one


def test_a_prefect_server_restart_mid_run_ends_in_one_version(
    service: Service, models: dict[str, Path]
) -> None:
    flow_run_id = _running(service, "steady", models["convnet"])
    server = psutil.Process(service.pid("prefect"))
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(60)
    service.run("up")  # the server again, on the same PostgreSQL; the rest is still running
    run = _wait_final(service, flow_run_id, timeout=600, until={"COMPLETED", "FAILED", "CANCELLED"})
    assert run["state"]["type"] == "COMPLETED", _state(run)  # finished, or crashed and re-run
    assert _registry(service).versions("steady") == [1]


def test_a_webhook_restart_loses_nothing_accepted(service: Service, models: dict[str, Path]) -> None:
    """Accepted while Prefect was unreachable from the webhook, which then died: the restarted
    webhook starts the run from the registry alone."""
    old = psutil.Process(service.pid("webhook"))
    os.killpg(old.pid, signal.SIGTERM)
    old.wait(30)
    port = service.env["SHIPYARD_WEBHOOK_PORT"]
    blind = {
        **service.env,
        **service.registry_env(),
        "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api",  # nothing listens there
        "SHIPYARD_WEBHOOK_PORT": port,
    }
    log = (service.state / "webhook-blind.log").open("wb")
    webhook = subprocess.Popen(
        [sys.executable, "-m", "flows.webhook"], env=blind, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        from infra.service import wait_http

        assert wait_http(f"{service.webhook}/healthz", 60, webhook)
        answer = _post(service, "durable", models["multi_io"].read_bytes(), {"targets": "triton"})
    finally:
        os.killpg(webhook.pid, signal.SIGKILL)
        webhook.wait(30)
    assert answer["run_id"]
    service.run("up")  # starts the webhook again, the service's way
    run = _wait_final(service, flow_run_of(service.api, answer["run_id"], timeout=120, auth=PREFECT_AUTH))
    assert run["state"]["type"] == "COMPLETED"
    assert _registry(service).versions("durable") == [1]


def test_the_nightly_fans_out_one_run_per_model(service: Service) -> None:
    """Needs the models published above; each gets a package-model run of its own."""
    deployment = httpx.get(
        f"{service.api}/deployments/name/nightly-reexport/nightly-reexport", timeout=30, auth=PREFECT_AUTH
    )
    nightly = httpx.post(
        f"{service.api}/deployments/{deployment.json()['id']}/create_flow_run",
        json={},
        timeout=30,
        auth=PREFECT_AUTH,
    ).json()
    run = _wait_final(service, nightly["id"], timeout=900)
    assert run["state"]["type"] == "COMPLETED", _state(run)
    children = httpx.post(
        f"{service.api}/flow_runs/filter",
        json={"flow_runs": {"tags": {"all_": ["nightly"]}}, "limit": 50},
        timeout=30,
        auth=PREFECT_AUTH,
    ).json()
    models = {c["parameters"]["name"] for c in children}
    tracked = set(_registry(service).models())
    assert models == tracked and len(children) == len(tracked) >= 5
    assert {c["state"]["type"] for c in children} == {"COMPLETED"}
    assert all(c["idempotency_key"].startswith(nightly["id"]) for c in children)
    registry = _registry(service)
    assert {m: registry.versions(m) for m in tracked} == {m: [1] for m in tracked}  # same toolchain
