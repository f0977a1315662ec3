"""Hugging Face causal-LM folders as a source: detected by content, checked without running any
of it, described by `shipyard inspect`; refused with one line when anything would run as code."""

from __future__ import annotations

import json
import shutil
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from shipyard.errors import SourceError
from shipyard.hf_folder import inspect_causal_lm, read_causal_lm
from shipyard.source import SourceKind, detect_kind
from tests.conftest import registry_files, run_cli
from tests.llm_models import ARCHITECTURES, save_tiny_lm


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One untrained tiny model per architecture (these tests read files; none runs the model)."""
    root = tmp_path_factory.mktemp("hf")
    return {a: save_tiny_lm(root / a, a, train_steps=0) for a in ARCHITECTURES}


def _copy(folder: Path, dest: Path) -> Path:
    shutil.copytree(folder, dest)
    return dest


def test_the_facts_come_from_the_files(folders: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM

    for architecture, folder in folders.items():
        facts = read_causal_lm(folder)
        model = AutoModelForCausalLM.from_pretrained(folder)
        config = model.config
        assert facts.model_type == architecture and facts.architecture == type(model).__name__
        stored = {id(p): p.numel() for p in model.parameters()}  # a tied matrix is stored once
        assert facts.parameters == sum(stored.values())
        assert (facts.layers, facts.heads, facts.kv_heads) == (
            config.num_hidden_layers,
            config.num_attention_heads,
            config.num_key_value_heads,
        )
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        assert facts.head_dim == head_dim
        assert facts.tied_embeddings is bool(config.tie_word_embeddings)
        assert (facts.bos_id, facts.eos_ids, facts.tokenizer, facts.dtype) == (1, [2], "BPE", "F32")
    assert (
        read_causal_lm(folders["gemma"]).tied_embeddings
        and not read_causal_lm(folders["llama"]).tied_embeddings
    )


def test_a_folder_and_its_archives_are_detected(folders: dict[str, Path], tmp_path: Path) -> None:
    folder = folders["llama"]
    assert detect_kind(folder) is SourceKind.HF_FOLDER
    flat = tmp_path / "flat.zip"
    with zipfile.ZipFile(flat, "w") as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, path.name)
    nested = tmp_path / "nested.tar.gz"
    with tarfile.open(nested, "w:gz") as tar:
        tar.add(folder, arcname="my-model")
    for archive in (flat, nested):
        assert detect_kind(archive) is SourceKind.HF_ARCHIVE
        assert detect_kind(archive, thorough=False) is SourceKind.HF_ARCHIVE
        assert inspect_causal_lm(archive) == read_causal_lm(folder)


def _edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _bad_header(folder: Path) -> None:
    """Point a tensor's data past the end of the file."""
    path = folder / "model.safetensors"
    raw = path.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + length])
    name = next(k for k in header if k != "__metadata__")
    start, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [start + 10**9, end + 10**9]
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length :])


REFUSALS = {
    "a pickle": (lambda f: (f / "pytorch_model.bin").write_bytes(b"\x80\x04pickle"), "pytorch_model.bin"),
    "custom code": (lambda f: _edit_json(f / "config.json", auto_map={"AutoModel": "x.Y"}), "auto_map"),
    "custom tokenizer": (
        lambda f: _edit_json(f / "tokenizer_config.json", auto_map={"AutoTokenizer": "t.T"}),
        "auto_map",
    ),
    "an encoder": (
        lambda f: _edit_json(f / "config.json", architectures=["BertModel"], model_type="bert"),
        "not a causal LM (BertModel)",
    ),
    "an unknown decoder": (
        lambda f: _edit_json(f / "config.json", architectures=["GPT2LMHeadForCausalLM"], model_type="gpt2"),
        "model_type 'gpt2'",
    ),
    "no tokenizer": (lambda f: (f / "tokenizer.json").unlink(), "no tokenizer.json"),
    "a header past the data": (_bad_header, "bad header entry"),
    "a shard outside": (
        lambda f: (f / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {"lm_head.weight": "../model.safetensors"}})
        ),
        "not a file beside it",
    ),
    "a link": (lambda f: (f / "extra.json").symlink_to("/etc/passwd"), "is a link"),
    "no layers": (lambda f: _edit_json(f / "config.json", num_hidden_layers=0), "num_hidden_layers must be"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_folder_that_would_run_code_or_is_broken_is_refused(
    case: str, folders: dict[str, Path], tmp_path: Path
) -> None:
    folder = _copy(folders["qwen3"], tmp_path / "model")
    damage, expected = REFUSALS[case]
    damage(folder)
    with pytest.raises(SourceError) as caught:
        read_causal_lm(folder)
    assert expected in str(caught.value)


def test_inspect_shows_the_facts_and_a_target_that_builds_no_llm_is_refused(
    folders: dict[str, Path], home: Path
) -> None:
    folder = folders["gemma"]
    shown = run_cli(["inspect", str(folder)], home)
    assert shown.returncode == 0, shown.stderr
    assert "GemmaForCausalLM (gemma)" in shown.stdout and "heads 2, kv heads 1, head dim 32" in shown.stdout
    as_json = json.loads(run_cli(["inspect", str(folder), "--json"], home).stdout)
    assert as_json["kind"] == "hf-folder" and as_json["model_class"] == "causal-lm"
    assert as_json["parameters"] == read_causal_lm(folder).parameters

    refused = run_cli(["package", str(folder), "--targets", "tfjs,triton"], home)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "none of them builds a causal-lm model" in refused.stderr
    assert registry_files(home) == [] and not (home / "sources").exists()  # nothing packed or written

    bad = _copy(folder, home.parent / "with-pickle")
    (bad / "pytorch_model.bin").write_bytes(b"\x80\x04x")
    refused = run_cli(["package", str(bad)], home)
    assert (
        refused.returncode == 2 and "pytorch_model.bin" in refused.stderr and refused.stderr.count("\n") == 1
    )
