"""A causal LM's reference: eager PyTorch's greedy tokens and logits on the validation prompts.

Each prompt is one validation variant. Its inputs: the whole sequence eager made (`input_ids`:
the prompt, then eager's greedy continuation), the prompt's length, and eager's margin between
its two best logits at every generated step. Its reference output: eager's logits at every
position ([tokens, vocab], teacher-forced). A target's runtime feeds the same sequence through
its KV cache (the prompt at once, then one token at a time), returns its logits at every
position, and counts where its own greedy choice differs from eager's: the judge compares the
logits like any output (max error, cosine, top-1 agreement), the runtime's checks the tokens.

One variant fills the KV cache to its length (a prompt of random ids, then greedy to the end).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shipyard.errors import SourceError, SpecError
from shipyard.hf_folder import CausalLmFacts
from shipyard.signature import DynamicDim, Signature, TensorSpec
from shipyard.spec import GenerationSpec

__all__ = [
    "EAGER_MARGIN",
    "INPUT_IDS",
    "LOGITS",
    "PROMPT_LENGTH",
    "TIE_MARGIN",
    "TOKENS",
    "GenerationVariant",
    "cache_length",
    "generation_signature",
    "load_causal_lm",
    "prompt_ids",
    "reference_generation",
]

INPUT_IDS, PROMPT_LENGTH, EAGER_MARGIN, LOGITS = "input_ids", "prompt_length", "eager_margin", "logits"
TOKENS = "tokens"  # the dim of a sequence's length
# A step where eager's best two logits are closer than this is a near-tie: float rounding in
# another runtime may pick either, so a different token there is recorded, not a failure.
TIE_MARGIN = 1e-3
DEFAULT_CACHE = 256
RANDOM_PROMPTS = 2  # prompts of seeded random ids when the spec gives none
RANDOM_PROMPT_LENGTH = 8


class GenerationVariant:
    """One prompt's sequence, as the runtime and the judge read it."""

    def __init__(self, name: str, ids: np.ndarray, prompt_length: int, margins: np.ndarray) -> None:
        self.name, self.ids, self.prompt_length, self.margins = name, ids, prompt_length, margins

    @property
    def inputs(self) -> dict[str, np.ndarray]:
        return {
            INPUT_IDS: self.ids.reshape(1, -1).astype(np.int64),
            PROMPT_LENGTH: np.array(self.prompt_length, dtype=np.int64),
            EAGER_MARGIN: self.margins.astype(np.float32),
        }


def cache_length(facts: CausalLmFacts, spec: GenerationSpec) -> int:
    """The KV cache length every artifact is built with."""
    length = spec.max_cache_len or min(facts.context_length, DEFAULT_CACHE)
    if length > facts.context_length:
        raise SpecError(
            f"spec field generation.max_cache_len: {length} is beyond the model's context length "
            f"({facts.context_length})"
        )
    return length


def generation_signature(facts: CausalLmFacts, spec: GenerationSpec) -> Signature:
    """The interface validation compares: token ids in, logits at every position out."""
    length = cache_length(facts, spec)
    typical = min(length, RANDOM_PROMPT_LENGTH + spec.max_new_tokens)
    return Signature(
        inputs=[TensorSpec(name=INPUT_IDS, dtype="int64", shape=[1, TOKENS])],
        outputs=[TensorSpec(name=LOGITS, dtype="float32", shape=[TOKENS, facts.vocab_size])],
        dims={TOKENS: DynamicDim(name=TOKENS, min=1, max=length, typical=typical)},
    )


def load_causal_lm(folder: Path) -> Any:
    """The model, built by transformers' own class for its model_type from safetensors only
    (read_causal_lm has refused custom code and pickles)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, use_safetensors=True, trust_remote_code=False, local_files_only=True
    )
    return model.eval()


def prompt_ids(folder: Path, facts: CausalLmFacts, spec: GenerationSpec, seed: int) -> list[list[int]]:
    """The spec's prompts (text through the folder's tokenizer.json, or ids), else seeded random
    ids from the tokenizer's ordinary tokens."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    vocab = min(tokenizer.get_vocab_size(), facts.vocab_size)
    added = tokenizer.get_added_tokens_decoder()
    special = {i for i, token in added.items() if token.special} | set(facts.eos_ids)
    prompts = []
    for i, prompt in enumerate(spec.prompts):
        ids = tokenizer.encode(prompt, add_special_tokens=False).ids if isinstance(prompt, str) else prompt
        if not ids or any(not 0 <= t < facts.vocab_size for t in ids):
            raise SpecError(f"spec field generation.prompts.{i}: empty, or ids outside the vocabulary")
        prompts.append(([facts.bos_id] if facts.bos_id is not None and isinstance(prompt, str) else []) + ids)
    if prompts:
        return prompts
    ordinary = [t for t in range(vocab) if t not in special]
    if not ordinary:
        raise SourceError("the tokenizer has no ordinary tokens to make validation prompts from")
    rng = np.random.default_rng(seed)
    head = [facts.bos_id] if facts.bos_id is not None else []
    return [
        head + [int(t) for t in rng.choice(ordinary, size=RANDOM_PROMPT_LENGTH)]
        for _ in range(RANDOM_PROMPTS)
    ]


def reference_generation(
    model: Any, prompts: list[list[int]], new_tokens: int, cache: int
) -> list[tuple[GenerationVariant, np.ndarray]]:
    """Eager's variant and logits for each prompt, and one more that fills the cache."""
    sequences = [(f"prompt-{i}", p, min(new_tokens, cache - len(p))) for i, p in enumerate(prompts)]
    for name, prompt, count in sequences:
        if count < 1:
            raise SpecError(
                f"spec field generation.prompts: {name} has {len(prompt)} tokens, no room to generate "
                f"in a KV cache of {cache}"
            )
    first = prompts[0]
    sequences.append(("full-cache", first, cache - len(first)))
    return [_generate(model, name, prompt, count) for name, prompt, count in sequences]


def _generate(model: Any, name: str, prompt: list[int], count: int) -> tuple[GenerationVariant, np.ndarray]:
    """Greedy decoding without a cache (each step sees the whole sequence: eager as written),
    then the logits at every position of the result, teacher-forced."""
    import torch

    ids = list(prompt)
    with torch.no_grad():
        for _ in range(count):
            logits = model(torch.tensor([ids])).logits[0, -1]
            ids.append(int(logits.argmax()))
        logits = model(torch.tensor([ids])).logits[0].float().numpy()
    generated = logits[len(prompt) - 1 : -1]  # the logits each generated token was chosen from
    top2 = np.sort(generated, axis=-1)[:, -2:]
    margins = top2[:, 1] - top2[:, 0]
    return GenerationVariant(name, np.array(ids), len(prompt), margins), logits
