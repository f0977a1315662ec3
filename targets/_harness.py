"""Run an artifact loaded in this (step) process on every variant, and time it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shipyard.variants import load_arrays, save_arrays
from targets._jobs import ArtifactRole, ArtifactRun, RuntimeJob

__all__ = ["Predict", "run_in_process", "timed_variant"]

# inputs in signature order -> outputs in signature order
Predict = Callable[[list[np.ndarray]], list[Any]]


def timed_variant(job: RuntimeJob) -> str:
    """The variant whose latency is reported: the typical one when there is one."""
    names = [v.name for v in job.variants]
    return "typical" if "typical" in names else names[0]


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensors
        value = value.detach().cpu().numpy()
    elif hasattr(value, "numpy"):  # tf tensors and the like
        value = value.numpy()
    return np.asarray(value)


def run_in_process(
    job: RuntimeJob,
    file: str,
    runtime: str,
    load: Callable[[], Predict],
    role: ArtifactRole = ArtifactRole.SHIPPED,
) -> ArtifactRun:
    """Load once (timed), run every variant, then time `job.repeats` runs of the typical one and
    `job.profile_repeats` of each other one (after the typical's warm-up)."""
    start = time.perf_counter()
    predict = load()
    load_ms = (time.perf_counter() - start) * 1000
    input_names = job.signature.input_names()
    output_names = job.signature.output_names()
    outputs: dict[str, str] = {}
    feeds: dict[str, list[np.ndarray]] = {}
    for v in job.variants:
        arrays = load_arrays(Path(v.inputs))
        feeds[v.name] = [arrays[n] for n in input_names]
        got = predict(feeds[v.name])
        if len(got) != len(output_names):
            raise RuntimeError(f"{file} returned {len(got)} outputs, the model has {len(output_names)}")
        path = Path(job.out_dir) / f"{file.replace('/', '_')}.{v.name}.npz"
        save_arrays(path, {n: _as_numpy(o) for n, o in zip(output_names, got, strict=True)})
        outputs[v.name] = str(Path(path).relative_to(job.out_dir))
    typical = timed_variant(job)
    predict(feeds[typical])  # warm-up
    times = _timed(predict, feeds[typical], job.repeats)
    profile = {
        name: _timed(predict, feed, job.profile_repeats) for name, feed in feeds.items() if name != typical
    }
    return ArtifactRun(
        file=file,
        runtime=runtime,
        role=role,
        outputs=outputs,
        load_ms=round(load_ms, 3),
        times_ms=times,
        profile_ms=profile,
    )


def _timed(predict: Predict, feed: list[np.ndarray], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict(feed)
        times.append((time.perf_counter() - t0) * 1000)
    return times
