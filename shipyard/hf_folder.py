"""A Hugging Face causal-LM folder (`save_pretrained`'s output), checked without running any of it.

What is read: `config.json`, the safetensors headers (and `model.safetensors.index.json` when
sharded), `tokenizer.json`, `tokenizer_config.json`, `generation_config.json`. Nothing in the
folder runs as code, ever: a config that names custom classes (`auto_map`, which transformers
loads only with `trust_remote_code`) is refused, and so is every file whose format can run code
when loaded (pickles: `pytorch_model.bin`, `.pt`, `.ckpt`, ...). Weights come from safetensors
only, whose header is JSON and whose data is raw bytes.
"""

from __future__ import annotations

import itertools
import json
import struct
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shipyard.errors import SourceError

__all__ = [
    "CAUSAL_LM_TYPES",
    "CausalLmFacts",
    "find_hf_folder",
    "holds_hf_model",
    "inspect_causal_lm",
    "read_causal_lm",
]

# model_type -> what transformers' own classes build (no code from the folder)
CAUSAL_LM_TYPES = ("gemma", "gemma2", "gemma3_text", "llama", "mistral", "phi3", "qwen2", "qwen3", "smollm3")
# formats that can run code when loaded, or weights in a format other than safetensors
REFUSED_WEIGHTS = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".h5", ".msgpack", ".joblib")
MAX_JSON_BYTES = 64 << 20  # tokenizer.json of a 256k vocabulary is ~30 MB
MAX_CONFIG_BYTES = 1 << 20
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


class CausalLmFacts(BaseModel):
    """What `shipyard inspect` shows of a causal LM, read from its files."""

    architecture: str  # e.g. LlamaForCausalLM
    model_type: str
    parameters: int  # distinct weights in the safetensors files
    weight_bytes: int
    dtype: str  # the weights' most common safetensors dtype (F32, BF16, ...)
    layers: int
    hidden_size: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    context_length: int  # max_position_embeddings
    tied_embeddings: bool
    tokenizer: str  # tokenizer.json's model: BPE, Unigram, WordPiece, WordLevel
    bos_id: int | None
    eos_ids: list[int]
    chat_template: bool
    weight_files: list[str]


def holds_hf_model(names: list[str]) -> bool:
    """Does an archive listing (or a folder's files) hold a Hugging Face model folder?"""
    top = {n.rsplit("/", 1)[-1] for n in names if n.count("/") <= 1}
    return "config.json" in top and any(n.endswith((".safetensors", ".safetensors.index.json")) for n in top)


def find_hf_folder(root: Path) -> Path:
    """The model folder in an unpacked archive: `root` itself, or its one subfolder."""
    if (root / "config.json").is_file():
        return root
    found = [p.parent for p in root.glob("*/config.json")]
    if len(found) != 1:
        raise SourceError(f"expected one folder with config.json, found {len(found)}")
    return found[0]


def inspect_causal_lm(source: Path) -> CausalLmFacts:
    """The facts of a model folder, or of the folder in an archive (unpacked with the checked
    unpacker into a temporary folder)."""
    if source.is_dir():
        return read_causal_lm(source)
    import tempfile

    from shipyard.archive import unpack_archive

    with tempfile.TemporaryDirectory(prefix="shipyard-hf-") as scratch:
        unpack_archive(source, Path(scratch))
        try:
            return read_causal_lm(find_hf_folder(Path(scratch)))
        except SourceError as exc:
            raise SourceError(f"{source}: {exc}") from None


def read_causal_lm(folder: Path) -> CausalLmFacts:
    """The folder's facts once every file it needs is checked; SourceError says what is wrong."""
    _refuse_code(folder)
    config = _json(folder / "config.json", MAX_CONFIG_BYTES)
    architecture = _causal_architecture(config)
    tokenizer_config = _json(folder / "tokenizer_config.json", MAX_JSON_BYTES, required=False)
    for name, data in (("config.json", config), ("tokenizer_config.json", tokenizer_config)):
        if "auto_map" in data:
            raise SourceError(
                f"{name} names custom code (auto_map); nothing from an uploaded folder runs as code, "
                "so only architectures transformers builds itself are taken"
            )
    tensors, files = _weights(folder)
    generation = _json(folder / "generation_config.json", MAX_CONFIG_BYTES, required=False)
    heads = _int(config, "num_attention_heads")
    hidden = _int(config, "hidden_size")
    dtypes = Counter(t["dtype"] for t in tensors.values())
    return CausalLmFacts(
        architecture=architecture,
        model_type=config["model_type"],
        parameters=sum(_elements(t["shape"]) for t in tensors.values()),
        weight_bytes=sum(t["data_offsets"][1] - t["data_offsets"][0] for t in tensors.values()),
        dtype=dtypes.most_common(1)[0][0],
        layers=_int(config, "num_hidden_layers"),
        hidden_size=hidden,
        heads=heads,
        kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or hidden // heads),
        vocab_size=_int(config, "vocab_size"),
        context_length=_int(config, "max_position_embeddings"),
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        tokenizer=_tokenizer_kind(folder),
        bos_id=_first_id(generation.get("bos_token_id", config.get("bos_token_id"))),
        eos_ids=_ids(generation.get("eos_token_id", config.get("eos_token_id"))),
        chat_template=bool(tokenizer_config.get("chat_template"))
        or (folder / "chat_template.jinja").is_file(),
        weight_files=files,
    )


def _refuse_code(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise SourceError(f"{path.relative_to(folder)} is a link; a model folder holds files only")
        if path.suffix.lower() in REFUSED_WEIGHTS:
            raise SourceError(
                f"{path.relative_to(folder)}: weights are read from safetensors only ({path.suffix} files "
                "can run code when loaded, or are not safetensors); remove it, or save with "
                "save_pretrained(safe_serialization=True)"
            )


def _json(path: Path, limit: int, required: bool = True) -> dict[str, Any]:
    if not path.is_file():
        if required:
            raise SourceError(f"the folder has no {path.name}")
        return {}
    if path.stat().st_size > limit:
        raise SourceError(f"{path.name} is {path.stat().st_size:,} bytes, more than {limit:,}")
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path.name} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SourceError(f"{path.name} is not a JSON object")
    return data


def _causal_architecture(config: dict[str, Any]) -> str:
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    causal = [a for a in architectures if isinstance(a, str) and a.endswith("ForCausalLM")]
    if not causal:
        named = ", ".join(map(str, architectures)) or f"model_type {model_type!r}"
        raise SourceError(
            f"not a causal LM ({named}); from a Hugging Face folder this version packages decoder "
            "language models (*ForCausalLM)"
        )
    if model_type not in CAUSAL_LM_TYPES:
        raise SourceError(
            f"model_type {model_type!r} ({causal[0]}) is not supported yet; supported: "
            f"{', '.join(CAUSAL_LM_TYPES)}"
        )
    return causal[0]


def _int(config: dict[str, Any], key: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise SourceError(f"config.json: {key} must be a positive integer, not {value!r}")
    return value


def _ids(value: Any) -> list[int]:
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool)]


def _first_id(value: Any) -> int | None:
    ids = _ids(value)
    return ids[0] if ids else None


def _elements(shape: list[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def _weights(folder: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every tensor's header entry, from model.safetensors or the shards its index names."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _json(index, MAX_JSON_BYTES).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise SourceError("model.safetensors.index.json has no weight_map")
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            if (
                not isinstance(shard, str)
                or "/" in shard
                or "\\" in shard
                or not shard.endswith(".safetensors")
            ):
                raise SourceError(f"model.safetensors.index.json names {shard!r}, not a file beside it")
    else:
        shards = sorted(p.name for p in folder.glob("*.safetensors"))
        weight_map = None
    if not shards:
        raise SourceError("the folder has no .safetensors weights (save_pretrained writes model.safetensors)")
    tensors: dict[str, dict[str, Any]] = {}
    for shard in shards:
        for name, entry in _safetensors_header(folder / shard).items():
            if name in tensors:
                raise SourceError(f"tensor {name!r} is in two weight files")
            tensors[name] = entry
            if weight_map is not None and weight_map.get(name) != shard:
                raise SourceError(f"{shard} holds {name!r}, which the index places elsewhere")
    missing = sorted(set(weight_map or {}) - set(tensors))
    if missing:
        raise SourceError(f"model.safetensors.index.json lists {missing[0]!r}, which no shard holds")
    return tensors, shards


def _safetensors_header(path: Path) -> dict[str, dict[str, Any]]:
    """The tensors a safetensors file declares, each checked to lie inside its data."""
    if not path.is_file():
        raise SourceError(f"{path.name} is missing")
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < length <= min(MAX_HEADER_BYTES, size - 8):
            raise SourceError(f"{path.name} is not a safetensors file (header length {length})")
        try:
            header = json.loads(fh.read(length))
        except (ValueError, UnicodeDecodeError):
            raise SourceError(f"{path.name}: its safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise SourceError(f"{path.name}: its safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    data = size - 8 - length
    spans = []
    for name, entry in header.items():
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            ok = dtype in _DTYPE_BYTES and all(isinstance(d, int) and d >= 0 for d in shape)
            ok = ok and 0 <= start <= end <= data and end - start == _elements(shape) * _DTYPE_BYTES[dtype]
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise SourceError(f"{path.name}: tensor {str(name)[:80]!r} has a bad header entry")
        spans.append((start, end))
    spans.sort()
    if any(a_end > b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans)):
        raise SourceError(f"{path.name}: two tensors share bytes")
    return header


def _tokenizer_kind(folder: Path) -> str:
    tokenizer = _json(folder / "tokenizer.json", MAX_JSON_BYTES, required=False)
    if not tokenizer:
        raise SourceError(
            "the folder has no tokenizer.json (a fast tokenizer: save the tokenizer with "
            "save_pretrained beside the model)"
        )
    model = tokenizer.get("model")
    kind = model.get("type") if isinstance(model, dict) else None
    if not isinstance(kind, str):
        raise SourceError("tokenizer.json has no model type")
    return kind
