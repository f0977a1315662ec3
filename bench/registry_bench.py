"""Registry publish/pull of a large artifact against bare boto3 on the same bytes, with peak RSS.

Usage: python bench/registry_bench.py [--mb 500] [--repeats 3] [--out DIR]
       python bench/registry_bench.py --smoke   (20 MB, one round: checks the bench itself)
Starts its own SeaweedFS on 127.0.0.1 (free ports, temp dir). Each operation runs in a fresh
child process (so ru_maxrss is that operation's peak), the four operations interleaved,
`--repeats` rounds, each round to fresh keys; the table shows medians. Writes
DIR/registry_bench.json.

`shipyard-publish` is Registry.publish as `shipyard package` calls it: the artifact's digest
was computed for the report before publishing (outside the timed part here, as in a real run,
where it is part of validation), and the upload reuses that read (shipyard.digests).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHUNK = 8 << 20
OPS = ("boto3-upload", "shipyard-publish", "boto3-download", "shipyard-pull")


def _client():  # type: ignore[no-untyped-def]
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(s3={"addressing_style": "path"}))


def _publish(url: str, path: Path, work: Path) -> None:
    from registry import RunInfo, SourceInfo, VersionDraft, open_registry
    from shipyard.digests import file_digests
    from shipyard.report import FileEntry, Status, TargetReport
    from shipyard.signature import Signature

    digest = file_digests(path).sha256  # the report's digest, computed before publishing
    entry = FileEntry(path=path.name, sha256=digest, bytes=path.stat().st_size)
    draft = VersionDraft(
        model="big",
        source=SourceInfo(sha256=hashlib.sha256(b"src").hexdigest(), kind="bench", bytes=3, filename="s"),
        spec={},
        signature=Signature(inputs=[], outputs=[]),
        toolchain={},
        run=RunInfo(run_id="bench", shipyard_version="0"),
        targets={"t": TargetReport(status=Status.PASSED, files=[entry])},
    )
    (work / "s").write_bytes(b"src")
    start = time.perf_counter()
    open_registry(url).publish(draft, {"t": path.parent}, work / "s")
    _report("shipyard-publish", time.perf_counter() - start)


def _report(op: str, seconds: float) -> None:
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"op": op, "seconds": round(seconds, 3), "peak_rss_mb": round(peak_mb, 1)}))


def _op(op: str, url: str, bucket: str, path: Path, work: Path, round_: int) -> None:
    """One timed operation, run in a child process."""
    if op == "shipyard-publish":
        _publish(url, path, work)
        return
    from registry import open_registry  # imported before the clock starts, like boto3

    start = time.perf_counter()
    if op == "boto3-upload":
        _client().upload_file(str(path), bucket, f"bare/blob{round_}")
    elif op == "boto3-download":
        _client().download_file(bucket, f"bare/blob{round_}", str(work / f"bare{round_}.bin"))
    elif op == "shipyard-pull":
        open_registry(url).pull("big", "t", work / f"pulled{round_}")
    _report(op, time.perf_counter() - start)


def _artifact(folder: Path, mb: int) -> Path:
    folder.mkdir()
    path = folder / "model.bin"
    with path.open("wb") as fh:
        for _ in range(mb * (1 << 20) // CHUNK):
            fh.write(os.urandom(CHUNK))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--smoke", action="store_true", help="20 MB, one round: the bench runs")
    parser.add_argument("--op", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.op:
        _op(args.op, args.url, args.bucket, args.path, args.work, args.round)
        return
    if args.smoke:
        args.mb, args.repeats = 20, 1

    from infra.seaweed import free_port, start_seaweedfs, wait_for_s3

    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port = free_port()
        os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
        server = start_seaweedfs(work / "sw", port, "bench", work / "weed.log")
        try:
            wait_for_s3(os.environ["AWS_ENDPOINT_URL"], "bench")
            for round_ in range(args.repeats):
                path = _artifact(work / f"artifact{round_}", args.mb)  # new bytes: nothing is deduplicated
                for op in OPS:
                    command = [sys.executable, __file__, "--op", op, "--url", f"s3://bench/reg{round_}"]
                    command += ["--bucket", "bench", "--path", str(path), "--work", str(work)]
                    command += ["--round", str(round_)]
                    out = subprocess.run(command, capture_output=True, text=True, check=True)
                    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        finally:
            os.killpg(server.pid, 15)
            server.wait(30)
    median = {op: statistics.median(r["seconds"] for r in rows if r["op"] == op) for op in OPS}
    peak = {op: max(r["peak_rss_mb"] for r in rows if r["op"] == op) for op in OPS}
    ratios = {
        "publish_vs_upload": round(median["shipyard-publish"] / median["boto3-upload"], 2),
        "pull_vs_download": round(median["shipyard-pull"] / median["boto3-download"], 2),
    }
    summary = [{"op": op, "median_s": round(median[op], 2), "peak_rss_mb": peak[op]} for op in OPS]
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"mb": args.mb, "repeats": args.repeats, "summary": summary, "rows": rows, **ratios}
    name = "registry_bench-smoke.json" if args.smoke else "registry_bench.json"
    (args.out / name).write_text(json.dumps(result, indent=2))
    print(f"{'operation':<18} {'median s':>9} {'peak RSS MB':>12}   ({args.mb} MB, {args.repeats} rounds)")
    for r in summary:
        print(f"{r['op']:<18} {r['median_s']:>9} {r['peak_rss_mb']:>12}")
    print(
        f"publish / bare upload: {ratios['publish_vs_upload']}x time; "
        f"pull / bare download: {ratios['pull_vs_download']}x time"
    )


if __name__ == "__main__":
    main()
