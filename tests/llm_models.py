"""Tiny decoder language models saved as Hugging Face folders: nothing downloaded.

Each is built from transformers' own config class with random weights, then trained for a few
hundred steps on a synthetic corpus of repeated word patterns, so its next-token predictions are
peaked (random weights give flat logits, near-ties everywhere, and nothing a lossy rung could be
judged on). The tokenizer is a byte-level BPE without merges over printable ASCII, built here
with `tokenizers`: decoding then encoding gives the same ids back, which runtimes that take and
return text need. `save_pretrained` writes the folder a user would upload.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

__all__ = ["ARCHITECTURES", "save_tiny_lm"]

SPECIALS = ("<pad>", "<s>", "</s>")  # ids 0, 1, 2
# The tokenizer's 98 ids, padded to a multiple of 32, and not the MLP's width (128): onnxruntime-
# genai 0.18's builder takes any Linear layer as wide as the vocabulary for the LM head, and built
# its head on the first MLP's output when the two were equal (no real model has them equal).
VOCAB_SIZE = 160
WORDS = ("the", "ship", "sails", "at", "dawn", "and", "sea", "is", "calm", "wind", "blows", "north")

# Three kinds of attention: grouped-query (llama), q/k norms (qwen3), tied embeddings with its own
# head_dim (gemma). Hidden sizes are multiples of 32 so int4 weight groups of 32 fit.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "llama": {"num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": False},
    "qwen3": {
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "tie_word_embeddings": False,
    },
    "gemma": {"num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32},
}


def _tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_chars = pre_tokenizers.ByteLevel.alphabet()  # the 256 byte stand-ins, unordered
    mapping = _bytes_to_unicode()
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for code in range(32, 127):
        assert mapping[code] in byte_chars
        vocab[mapping[code]] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable stand-in table (what the ByteLevel pre-tokenizer writes)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def _corpus(rng: random.Random, lines: int) -> list[str]:
    """Sentences of a few repeated word patterns: easy to learn, so predictions get peaked."""
    patterns = [[rng.choice(WORDS) for _ in range(rng.randint(3, 6))] for _ in range(8)]
    return [" ".join(rng.choice(patterns) * 3) + "." for _ in range(lines)]


def save_tiny_lm(folder: Path, architecture: str = "llama", train_steps: int = 300, seed: int = 0) -> Path:
    """A trained tiny causal LM of `architecture` saved to `folder` (safetensors, config,
    generation config, tokenizer)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer = _tokenizer()
    config = AutoConfig.for_model(
        architecture,
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        max_position_embeddings=256,
        initializer_range=0.1,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        **ARCHITECTURES[architecture],
    )
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    _train(model, tokenizer, rng, train_steps)
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def _train(model: Any, tokenizer: Any, rng: random.Random, steps: int) -> None:
    import torch

    ids = [tokenizer.encode(line) for line in _corpus(rng, 512)]
    stream = [t for line in ids for t in [1, *line, 2]]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        starts = [rng.randrange(0, len(stream) - 65) for _ in range(16)]
        batch = torch.tensor([stream[s : s + 64] for s in starts])
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
