"""Key/value-cache helpers of the in-process model's batched passes (the score task's `score_texts`, the
generator's `TransformersLLM.sample_many`): the prompts' shared token prefix, the forward's cache argument,
the last position's logits only. No import of the rest of `finetune` (both sides use it)."""
from __future__ import annotations


def common_prefix(seqs: list[list[int]]) -> int:
    """Length of the token prefix every sequence shares, leaving each at least one token of its own."""
    if not seqs:
        return 0
    n = min(len(q) for q in seqs) - 1
    first = seqs[0]
    for i in range(max(n, 0)):
        t = first[i]
        if any(q[i] != t for q in seqs):
            return i
    return max(n, 0)


def forward_params(model) -> set[str]:
    """The argument names of the (base) model's forward; empty where they cannot be read."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return set(inspect.signature(type(base).forward).parameters)
    except (TypeError, ValueError):
        return set()


def cache_name(model) -> str:
    """The forward argument that takes a key/value cache: `cache` (transformers >= 5.2x), else `past_key_values`."""
    return "cache" if "cache" in forward_params(model) else "past_key_values"


def keep_last(model):
    """A function of a prefill's length giving the forward's `logits_to_keep` argument where the model takes it
    (the vocabulary's logits of the last position only: the others are never read, and 64 rows x 40
    positions x 49k vocabulary is a fifth of a small model's prefill). The position is given as an
    index tensor, not `1`: transformers then gathers a contiguous copy of the last hidden states, where the
    strided slice `1` gives takes a matmul path ~10x slower in bfloat16 on CPU (measured:
    benchmarks/scorer_speed.py). A model without the argument: a function giving {}."""
    import torch

    if "logits_to_keep" not in forward_params(model):
        return lambda n: {}
    return lambda n: {"logits_to_keep": torch.tensor([n - 1], device=model.device)}


def cache_of(result):
    cache = getattr(result, "cache", None)
    return cache if cache is not None else result.past_key_values


def chat_ids(tokenizer, prompts: list[list[dict]]) -> list[list[int]]:
    """Each chat prompt's token ids, the generation prompt added."""
    return [list(tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True, return_dict=True)
                 ["input_ids"]) for m in prompts]


def eos_and_pad(model, tokenizer) -> tuple[set[int], int]:
    """The token ids that end an answer (the tokenizer's and the generation config's) and the padding id."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    eos_ids = {tokenizer.eos_token_id} | set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    eos_ids.discard(None)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return eos_ids, pad
