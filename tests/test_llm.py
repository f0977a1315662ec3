"""Causal LMs from Hugging Face folders to device, proven by generation in the runtime they ship to.

Three tiny trained models with different attention (tests/llm_models.py): grouped-query (llama),
q/k norms (qwen3), tied embeddings with their own head_dim (gemma). Every greedy token of the
float32 artifact is eager PyTorch's; a tampered artifact fails, naming the first diverging step.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shipyard.report import Status
from shipyard.source import ModelClass
from targets.pipeline import Engine
from tests.conftest import register_variant, registry_files, run_cli, run_targets

GENERATION_METRICS = (
    "token_agreement",
    "near_ties",
    "top1_agreement",
    "mean_kl",
    "ttft_ms",
    "decode_tokens_per_s",
)


def test_a_folder_is_published_for_executorch_and_its_pulled_pte_generates(
    tiny_lms: dict[str, Path], home: Path, tmp_path: Path
) -> None:
    ran = run_cli(["package", str(tiny_lms["llama"]), "--json"], home)
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    pte = report["targets"]["executorch"]
    assert pte["status"] == "passed", pte.get("error")
    metrics = pte["metrics"]
    assert metrics["token_agreement"] == 1.0 and metrics["near_ties"] == 0
    assert all(metrics.get(name) is not None for name in GENERATION_METRICS)
    assert {g["name"] for g in pte["gates"]} >= {
        "greedy_tokens",
        "session_repeats",
        "metadata",
        "max_mean_kl",
    }
    skipped = {n: t["error"] for n, t in report["targets"].items() if t["status"] == "skipped"}
    assert skipped["tfjs"] == "tfjs builds no causal-lm model" and len(skipped) == 5
    assert report["version"] == 1 and any(f.startswith("blobs/sha256/") for f in registry_files(home))

    pulled = tmp_path / "pulled"
    got = run_cli(["pull", "llama", "--target", "executorch", "-o", str(pulled)], home)
    assert got.returncode == 0, got.stderr
    assert {"model.pte", "tokenizer.json", "config.json"} <= {p.name for p in pulled.iterdir()}
    _generates_like_eager(pulled, tiny_lms["llama"])


def _generates_like_eager(pulled: Path, folder: Path) -> None:
    """The pulled .pte, loaded by executorch.runtime as a user would, writes eager's tokens for a
    prompt from the pulled tokenizer."""
    import torch
    from executorch.runtime import Runtime
    from tokenizers import Tokenizer

    from shipyard.generation import load_causal_lm

    ids = [1, *Tokenizer.from_file(str(pulled / "tokenizer.json")).encode("the ship sails").ids]
    method = Runtime.get().load_program(pulled / "model.pte").load_method("forward")
    logits = method.execute([torch.tensor([ids]), torch.arange(len(ids))])[0]
    tokens = [int(logits[0, -1].argmax())]
    for _ in range(11):
        position = len(ids) + len(tokens) - 1
        tokens.append(
            int(method.execute([torch.tensor([[tokens[-1]]]), torch.tensor([position])])[0][0, -1].argmax())
        )
    eager = load_causal_lm(folder)
    sequence = list(ids)
    with torch.no_grad():
        for _ in range(12):
            sequence.append(int(eager(torch.tensor([sequence])).logits[0, -1].argmax()))
    assert tokens == sequence[len(ids) :]


@pytest.mark.parametrize("architecture", ["qwen3", "gemma"])
def test_other_attention_kinds_generate_eagers_tokens(
    architecture: str, tiny_lms: dict[str, Path], engine: Engine, tmp_path: Path
) -> None:
    result = run_targets(engine, tiny_lms[architecture], ["executorch"], tmp_path)
    report = result.reports["executorch"]
    assert report.status is Status.PASSED, report.error
    facts = report.metrics.model_dump()
    assert facts["token_agreement"] == 1.0 and report.metrics.top1_agreement is not None
    assert report.metrics.mean_kl is not None and report.metrics.mean_kl < 1e-5


def test_a_tampered_llm_artifact_fails_naming_the_first_divergence(
    tiny_lms: dict[str, Path], engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_variant(
        monkeypatch,
        "executorch",
        "executorch-tampered",
        export="tests.steps:tampered_executorch_llm",
        model_class=ModelClass.CAUSAL_LM,
    )
    result = run_targets(engine, tiny_lms["llama"], ["executorch", "executorch-tampered"], tmp_path)
    assert result.reports["executorch"].status is Status.PASSED
    tampered = result.reports["executorch-tampered"]
    assert tampered.status is Status.FAILED
    failed = {g.name: g for g in tampered.gates if not g.passed}
    assert "greedy_tokens" in failed and "first divergence: prompt-" in (failed["greedy_tokens"].detail or "")
    assert "max_mean_kl" in failed
    facts = tampered.metrics.model_dump()
    assert facts["token_agreement"] < 1.0 and isinstance(facts["greedy_prefix_tokens"], int)
    assert not np.isnan(facts["token_agreement"])
