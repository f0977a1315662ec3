"""Registry publish/pull of a large artifact against bare boto3 on the same bytes, with peak RSS.

Usage: python bench/registry_bench.py [--mb 500] [--out DIR]
Starts its own SeaweedFS on 127.0.0.1 (free ports, temp dir), times each operation in a fresh
child process (so ru_maxrss is that operation's peak), prints a table, writes DIR/registry_bench.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHUNK = 8 << 20


def _op(op: str, url: str, bucket: str, path: Path, work: Path) -> None:
    """One timed operation, run in a child process."""
    import boto3
    from botocore.config import Config

    start = time.perf_counter()
    if op == "boto3-upload":
        boto3.client("s3", config=Config(s3={"addressing_style": "path"})).upload_file(
            str(path), bucket, "bare/blob"
        )
    elif op == "boto3-download":
        boto3.client("s3", config=Config(s3={"addressing_style": "path"})).download_file(
            bucket, "bare/blob", str(work / "bare.bin")
        )
    elif op == "shipyard-publish":
        from registry import RunInfo, SourceInfo, VersionManifest, open_registry
        from shipyard.report import FileEntry, Status, TargetReport
        from shipyard.signature import Signature

        digest = json.loads((work / "digest.json").read_text())["sha256"]
        entry = FileEntry(path=path.name, sha256=digest, bytes=path.stat().st_size)
        draft = VersionManifest(
            model="big",
            version=0,
            created_at="",
            source=SourceInfo(sha256=hashlib.sha256(b"src").hexdigest(), kind="bench", bytes=3, filename="s"),
            spec={},
            signature=Signature(inputs=[], outputs=[]),
            toolchain={},
            run=RunInfo(run_id="bench", shipyard_version="0"),
            targets={"t": TargetReport(status=Status.PASSED, files=[entry])},
        )
        (work / "s").write_bytes(b"src")
        open_registry(url).publish(draft, {"t": path.parent}, work / "s")
    elif op == "shipyard-pull":
        from registry import open_registry

        open_registry(url).pull("big", "t", work / "pulled")
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"op": op, "seconds": round(seconds, 2), "peak_rss_mb": round(peak_mb, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=500)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--op", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.op:
        _op(args.op, args.url, args.bucket, args.path, args.work)
        return

    from infra.seaweed import free_port, start_seaweedfs, wait_for_s3

    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port = free_port()
        os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
        server = start_seaweedfs(work / "sw", port, "bench", work / "weed.log")
        try:
            wait_for_s3(os.environ["AWS_ENDPOINT_URL"], "bench")
            art = work / "artifact"
            art.mkdir()
            path = art / "model.bin"
            digest = hashlib.sha256()
            with path.open("wb") as fh:
                for _ in range(args.mb * (1 << 20) // CHUNK):
                    block = os.urandom(CHUNK)
                    digest.update(block)
                    fh.write(block)
            (work / "digest.json").write_text(json.dumps({"sha256": digest.hexdigest()}))
            rows = []
            for op in ("boto3-upload", "shipyard-publish", "boto3-download", "shipyard-pull"):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--op",
                        op,
                        "--url",
                        "s3://bench/reg",
                        "--bucket",
                        "bench",
                        "--path",
                        str(path),
                        "--work",
                        str(work),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        finally:
            os.killpg(server.pid, 15)
            server.wait(30)
    by = {r["op"]: r for r in rows}
    ratios = {
        "publish_vs_upload": round(by["shipyard-publish"]["seconds"] / by["boto3-upload"]["seconds"], 2),
        "pull_vs_download": round(by["shipyard-pull"]["seconds"] / by["boto3-download"]["seconds"], 2),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "registry_bench.json").write_text(
        json.dumps({"mb": args.mb, "rows": rows, **ratios}, indent=2)
    )
    print(
        f"{'operation':<18} {'seconds':>8} {'peak RSS MB':>12}"
        f"   ({args.mb} MB artifact, SeaweedFS on 127.0.0.1)"
    )
    for r in rows:
        print(f"{r['op']:<18} {r['seconds']:>8} {r['peak_rss_mb']:>12}")
    print(
        f"publish / bare upload: {ratios['publish_vs_upload']}x; "
        f"pull / bare download: {ratios['pull_vs_download']}x"
        " (publish re-reads the file once to check S3's checksum; pull hashes each file before it appears)"
    )


if __name__ == "__main__":
    main()
