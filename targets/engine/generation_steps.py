"""The prepare step of a causal LM: its checked folder, its validation interface, eager's tokens.

Like every step that loads an uploaded model it runs in a step process with a timeout and a
memory cap. It writes the same PreparedSource as a fixed-shape model's preparation (a
signature and variants with reference outputs), so caching, exports and judging work alike;
shipyard.generation says what a generation variant holds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from shipyard.archive import unpack_archive
from shipyard.generation import (
    LOGITS,
    TOKENS,
    cache_length,
    generation_signature,
    load_causal_lm,
    prompt_ids,
    reference_generation,
)
from shipyard.hf_folder import find_hf_folder, read_causal_lm
from shipyard.prepare import save_variant
from shipyard.variants import Variant
from targets.engine.steps import PreparedSource, PrepareJob

__all__ = ["prepare_generation"]


def prepare_generation(job: PrepareJob) -> PreparedSource:
    """Unpack and check the folder, then run eager greedy decoding on every validation prompt."""
    out = Path(job.out_dir)
    spec = job.spec.generation
    with tempfile.TemporaryDirectory(prefix="shipyard-hf-", dir=out.parent) as scratch:
        unpack_archive(Path(job.source), Path(scratch))
        folder = find_hf_folder(Path(scratch))
        facts = read_causal_lm(folder)
        signature = generation_signature(facts, spec)
        prompts = prompt_ids(folder, facts, spec, job.spec.seed)
        model = load_causal_lm(folder)
        generated = reference_generation(model, prompts, spec.max_new_tokens, cache_length(facts, spec))
    variants = [
        save_variant(
            out,
            Variant(name=v.name, dims={TOKENS: len(v.ids)}),
            v.inputs,
            {LOGITS: logits},
            job.max_variant_elements,
        )
        for v, logits in generated
    ]
    return PreparedSource(signature=signature, variants=variants)
