"""Run a language-model artifact on the generation variants, in its own runtime, and count tokens.

A runtime gives one function, `step(ids, position) -> logits`: feed these tokens at this cache
position, get the logits at each of them. For every variant (shipyard.generation) this harness
- prefills the prompt and feeds eager's continuation one token at a time (teacher-forced), saving
  the logits at every position for the judge, and comparing the artifact's own greedy choice at
  every step with eager's token: equal, a near-tie (eager's best two logits within TIE_MARGIN:
  recorded, not a failure), or a divergence;
- generates again from the prompt at position 0, greedily with its own tokens (a new session on
  the same loaded program: what the cache held from before must not matter), which must repeat
  its teacher-forced choices up to the first step where it differed from eager's token.
Latency, from the second generation of the typical variant: time to the first token (the
prompt's prefill), prefill and decode tokens per second.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from shipyard.generation import EAGER_MARGIN, INPUT_IDS, LOGITS, PROMPT_LENGTH, TIE_MARGIN
from shipyard.precision import Precision
from shipyard.variants import load_arrays, save_arrays
from targets._harness import timed_variant
from targets._jobs import ArtifactRun, Check, RuntimeJob, RuntimeResult

__all__ = ["DecodeStep", "GenerationTally", "generation_result", "run_generation"]

# tokens at `position` onwards -> the logits at each of them, [tokens, vocab]
DecodeStep = Callable[[np.ndarray, int], np.ndarray]


class GenerationTally(BaseModel):
    """Greedy steps over every variant: how many agreed with eager, and the sessions' repeats."""

    steps: int = 0
    agreed: int = 0
    near_ties: int = 0
    diverged: list[str] = []  # `variant step k: token a, eager b` for each divergence
    greedy_prefix: int | None = None  # steps before the first divergence (None: none diverged)
    repeats_differ: list[str] = []  # variants whose second session did not repeat the first

    def add_choices(self, variant: str, choices: np.ndarray, eager: np.ndarray, margins: np.ndarray) -> int:
        """Count one variant's greedy choices; the steps before its first disagreement."""
        first = len(choices)
        for k, (mine, theirs) in enumerate(zip(choices, eager, strict=True)):
            self.steps += 1
            if mine == theirs:
                self.agreed += 1
                continue
            first = min(first, k)
            if margins[k] < TIE_MARGIN:
                self.near_ties += 1
            else:
                self.diverged.append(f"{variant} step {k}: token {int(mine)}, eager {int(theirs)}")
                prefix = self.greedy_prefix
                self.greedy_prefix = k if prefix is None else min(prefix, k)
        return first

    def facts(self) -> dict[str, float | int | str]:
        agreement = (self.agreed + self.near_ties) / self.steps if self.steps else 1.0
        facts: dict[str, float | int | str] = {
            "token_agreement": round(agreement, 6),
            "near_ties": self.near_ties,
        }
        if self.greedy_prefix is not None:
            facts["greedy_prefix_tokens"] = self.greedy_prefix
        return facts

    def checks(self, precision: Precision) -> list[Check]:
        """float32: every greedy step is eager's (near-ties excepted); any rung: sessions repeat."""
        checks = [
            Check(
                name="session_repeats",
                passed=not self.repeats_differ,
                detail="a second generation from each prompt repeated the first"
                if not self.repeats_differ
                else f"a second generation differed: {', '.join(self.repeats_differ[:3])}",
            )
        ]
        if precision is Precision.FP32:
            checks.append(
                Check(
                    name="greedy_tokens",
                    passed=not self.diverged,
                    detail=f"{self.agreed} of {self.steps} greedy tokens equal to eager's, "
                    f"{self.near_ties} near-tie(s)"
                    + (f"; first divergence: {self.diverged[0]}" if self.diverged else ""),
                )
            )
        return checks


class _Timing(BaseModel):
    ttft_ms: float
    prefill_tokens_per_s: float
    decode_ms: list[float]


def _teacher_forced(step: DecodeStep, ids: np.ndarray, prompt: int) -> np.ndarray:
    rows = [step(ids[:prompt], 0)]
    rows += [step(ids[position : position + 1], position) for position in range(prompt, len(ids))]
    return np.concatenate(rows, axis=0)


def _free_run(step: DecodeStep, ids: np.ndarray, prompt: int, count: int) -> tuple[list[int], _Timing]:
    """Greedy from the prompt with its own tokens, `count` of them, timed."""
    start = time.perf_counter()
    tokens = [int(step(ids[:prompt], 0)[-1].argmax())]
    prefill_s = time.perf_counter() - start
    decode_ms = []
    while len(tokens) < count:
        start = time.perf_counter()
        tokens.append(int(step(np.array([tokens[-1]]), prompt + len(tokens) - 1)[-1].argmax()))
        decode_ms.append((time.perf_counter() - start) * 1000)
    timing = _Timing(ttft_ms=prefill_s * 1000, prefill_tokens_per_s=prompt / prefill_s, decode_ms=decode_ms)
    return tokens, timing


def run_generation(
    job: RuntimeJob, file: str, runtime: str, load: Callable[[], DecodeStep]
) -> tuple[ArtifactRun, GenerationTally, dict[str, float | int | str]]:
    """The artifact's logits on every variant (for the judge), its token tally, and its speed."""
    start = time.perf_counter()
    step = load()
    load_ms = (time.perf_counter() - start) * 1000
    tally = GenerationTally()
    outputs: dict[str, str] = {}
    timed = timed_variant(job)
    speed: dict[str, float | int | str] = {}
    times: list[float] = []
    for variant in job.variants:
        arrays = load_arrays(Path(variant.inputs))
        ids, prompt = arrays[INPUT_IDS].reshape(-1), int(arrays[PROMPT_LENGTH])
        logits = _teacher_forced(step, ids, prompt)
        path = Path(job.out_dir) / f"{file.replace('/', '_')}.{variant.name}.npz"
        save_arrays(path, {LOGITS: logits.astype(np.float32)})
        outputs[variant.name] = path.name
        choices = logits[prompt - 1 : -1].argmax(axis=-1)
        agreeing = tally.add_choices(variant.name, choices, ids[prompt:], arrays[EAGER_MARGIN])
        repeated, timing = _free_run(step, ids, prompt, len(choices))
        if repeated[: agreeing + 1] != [int(c) for c in choices[: agreeing + 1]]:
            tally.repeats_differ.append(variant.name)
        if variant.name == timed and timing.decode_ms:
            times = timing.decode_ms
            speed = {
                "ttft_ms": round(timing.ttft_ms, 3),
                "prefill_tokens_per_s": round(timing.prefill_tokens_per_s, 1),
                "decode_tokens_per_s": round(1000 / statistics.median(timing.decode_ms), 1),
            }
    run = ArtifactRun(file=file, runtime=runtime, outputs=outputs, load_ms=round(load_ms, 3), times_ms=times)
    return run, tally, speed


def generation_result(
    job: RuntimeJob,
    run: ArtifactRun,
    tally: GenerationTally,
    speed: dict[str, float | int | str],
    checks: list[Check],
) -> RuntimeResult:
    """The runtime's result: the run, the token checks and the facts reported as metrics."""
    return RuntimeResult(
        runs=[run], checks=[*tally.checks(job.precision), *checks], facts={**tally.facts(), **speed}
    )
