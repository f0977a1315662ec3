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

    ids = [1, *Tokenizer.from_file(str(pulled / "tokenizer.json")).encode("the ship sails").ids]
    method = Runtime.get().load_program(pulled / "model.pte").load_method("forward")
    logits = method.execute([torch.tensor([ids]), torch.arange(len(ids))])[0]
    tokens = [int(logits[0, -1].argmax())]
    for _ in range(11):
        position = len(ids) + len(tokens) - 1
        tokens.append(
            int(method.execute([torch.tensor([[tokens[-1]]]), torch.tensor([position])])[0][0, -1].argmax())
        )
    assert tokens == _eager_tokens(folder, ids, 12)


def _eager_tokens(folder: Path, prompt: list[int], count: int) -> list[int]:
    """Eager PyTorch's greedy continuation of `prompt`."""
    import torch

    from shipyard.generation import load_causal_lm

    eager, sequence = load_causal_lm(folder), list(prompt)
    with torch.no_grad():
        for _ in range(count):
            sequence.append(int(eager(torch.tensor([sequence])).logits[0, -1].argmax()))
    return sequence[len(prompt) :]


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
    # qwen3: its float32 export is in the session's step cache already (the test above)
    result = run_targets(engine, tiny_lms["qwen3"], ["executorch", "executorch-tampered"], tmp_path)
    assert result.reports["executorch"].status is Status.PASSED
    tampered = result.reports["executorch-tampered"]
    assert tampered.status is Status.FAILED
    failed = {g.name: g for g in tampered.gates if not g.passed}
    assert "greedy_tokens" in failed and "first divergence: prompt-" in (failed["greedy_tokens"].detail or "")
    assert "max_mean_kl" in failed
    facts = tampered.metrics.model_dump()
    assert facts["token_agreement"] < 1.0 and isinstance(facts["greedy_prefix_tokens"], int)
    assert not np.isnan(facts["token_agreement"])


def test_the_int4_rung_is_a_quarter_of_the_size_and_within_its_gates(
    tiny_lms: dict[str, Path], engine: Engine, tmp_path: Path
) -> None:
    result = run_targets(engine, tiny_lms["qwen3"], ["executorch", "executorch-int4"], tmp_path)
    fp32, int4 = result.reports["executorch"], result.reports["executorch-int4"]
    assert int4.status is Status.PASSED, int4.error
    size = {
        name: next(f.bytes for f in r.files if f.path == "model.pte") for name, r in result.reports.items()
    }
    assert size["executorch-int4"] < 0.45 * size["executorch"]
    assert fp32.metrics.mean_kl is not None and int4.metrics.mean_kl is not None
    assert int4.metrics.mean_kl > 100 * fp32.metrics.mean_kl  # the weights were quantized
    assert any("8da4w" in note for note in int4.notes)
    assert {g.name for g in int4.gates} >= {"max_mean_kl", "min_cosine", "session_repeats"}
    assert "greedy_tokens" not in {g.name for g in int4.gates}  # reported, not gated, below fp32
    assert 0 < int4.metrics.model_dump()["token_agreement"] <= 1


def test_onnx_genai_folders_generate_eagers_tokens_and_its_int4_rung_holds_its_gates(
    tiny_lms: dict[str, Path], engine: Engine, tmp_path: Path
) -> None:
    result = run_targets(engine, tiny_lms["gemma"], ["onnx-genai", "onnx-genai-int4"], tmp_path)
    fp32, int4 = result.reports["onnx-genai"], result.reports["onnx-genai-int4"]
    assert fp32.status is Status.PASSED, fp32.error
    assert int4.status is Status.PASSED, int4.error
    assert fp32.metrics.model_dump()["token_agreement"] == 1.0
    assert {"genai_config.json", "model.onnx", "tokenizer.json"} <= {f.path for f in fp32.files}
    assert sum(f.bytes for f in int4.files) < 0.5 * sum(f.bytes for f in fp32.files)
    assert any("accuracy_level 1" in note for note in int4.notes)

    import onnxruntime_genai as og

    model = og.Model(str(result.artifact_dirs["onnx-genai"]))  # the folder as a user loads it
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=24, do_sample=False)
    generator = og.Generator(model, params)
    prompt = [1, 30, 31, 32, 33]
    generator.append_tokens(np.array([prompt], dtype=np.int32))
    generated = []
    while len(generated) < 12:
        generator.generate_next_token()
        generated.append(int(generator.get_next_tokens()[0]))
    assert generated == _eager_tokens(tiny_lms["gemma"], prompt, 12)
