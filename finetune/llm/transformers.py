"""In process: a transformers model (the `finetune` model names), optionally with a peft adapter.

    from finetune.llm import make_llm
    llm = make_llm("smollm2-135m", adapter="runs/lora_fm")     # cuda where available, else cpu
    llm.generate(messages, temperature=0.0, max_new_tokens=64, extra={"grammar": gbnf})   # xgrammar, if installed
    llm.generate_many(prompts, max_new_tokens=[64, 80], batch_size=4)     # greedy, batched, left padding
    llm.sample_many(prompts, temperatures=[0.7, 1.0, 1.3], seed=0, max_new_tokens=72)   # one sampled answer each

A GBNF `grammar` in `extra` goes to xgrammar's logits processor (so the server kind this backend
speaks is llama.cpp's); without xgrammar the answer is parsed unconstrained (said once).
"""
from __future__ import annotations

from finetune.llm.base import LLMError, register_backend


class TransformersLLM:
    server_kind = "llama.cpp"  # takes the GBNF `grammar` field (finetune.llm.servers)

    def __init__(self, model: str, adapter: str | None = None, device: str = "auto"):
        import torch

        from finetune.models import FinetuneError, load_model, load_tokenizer, resolve_model

        try:
            path = resolve_model(model)
            self.tok = load_tokenizer(path)
            self.model = load_model(path)
        except FinetuneError as exc:
            raise LLMError(str(exc)) from None
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.model.to(device).eval()
        self.name = model
        self.grammar_note: str | None = None  # why grammars are not applied (said once), None: they are
        self._prefix = None  # sample_many's last shared prefix: ((model id, tokens), its key/value cache)
        if adapter:
            self._add_adapter(adapter)

    def _add_adapter(self, adapter: str) -> None:
        from peft import PeftModel

        try:
            self.model = PeftModel.from_pretrained(self.model, adapter)
        except Exception as exc:  # wrong folder, wrong base model
            raise LLMError(f"cannot load adapter {adapter}: {type(exc).__name__}: {str(exc)[:160]}") from None
        self.model.to(self.device).eval()
        self.name += f"+{adapter}"

    def for_inference(self, dtype: str = "float32") -> "TransformersLLM":
        """Ready for answering only: an adapter merged into the weights (no per-layer peft detour) and the
        weights cast to `dtype` (float32 | bfloat16: on a CPU with bf16 instructions about half the time
        of float32 for the scorer's batched pass; greedy answers may move by a digit). In place: the base
        weights now hold the adapter, so `with_adapter` is refused afterwards."""
        import torch

        kinds = {"float32": torch.float32, "bfloat16": torch.bfloat16}
        if dtype not in kinds:
            raise LLMError(f"dtype must be one of {', '.join(kinds)}, not {dtype!r}")
        if hasattr(self.model, "merge_and_unload"):
            self.model = self.model.merge_and_unload()
        self.model.to(kinds[dtype]).eval()
        self.merged, self._prefix = True, None
        return self

    def with_adapter(self, adapter: str) -> "TransformersLLM":
        """The same base weights with `adapter` on top (peft injects its layers into the base model:
        ask the base model first)."""
        if getattr(self, "merged", False):
            raise LLMError("this model's weights are merged (for_inference): load it again to add an adapter")
        other = object.__new__(TransformersLLM)
        other.__dict__.update(self.__dict__)
        other._add_adapter(adapter)
        return other

    def count_tokens(self, text: str) -> int:
        return len(self.tok(text)["input_ids"])

    def _processors(self, extra: dict | None) -> list:
        """xgrammar's logits processor for a GBNF `grammar` field; none (parsing only, said once) without
        xgrammar."""
        grammar = (extra or {}).get("grammar")
        if not grammar:
            return []
        from finetune.formats import grammar_logits_processor

        try:
            return [grammar_logits_processor(self.tok, grammar, getattr(self.model.config, "vocab_size", None))]
        except ImportError as exc:
            if self.grammar_note is None:
                import sys

                self.grammar_note = str(exc)
                print(f"warning: {exc}: answers are parsed unconstrained", file=sys.stderr, flush=True)
            return []

    def generate(self, messages, *, temperature=0.7, max_new_tokens=1024, seed=0, extra=None) -> str:
        import torch

        ids = self.tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
        ids = {k: v.to(self.device) for k, v in ids.items()}
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                                      temperature=temperature if temperature > 0 else None,
                                      top_p=0.95 if temperature > 0 else None,
                                      logits_processor=self._processors(extra) or None,
                                      pad_token_id=self.tok.pad_token_id or self.tok.eos_token_id)
        return self.tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)

    def sample_many(self, prompts, *, temperatures, seed=0, max_new_tokens=64, extra=None) -> list[str]:
        """One sampled answer per prompt, all in one batch: the prompts' common prefix (system message,
        network, slots: everything before a search prompt's tried list) run once and its key/value cache
        shared by every row, each row's own rest left-padded after it (`finetune.score.score_texts`' layout),
        then up to `max_new_tokens` sampling steps: the grammar of `extra` (xgrammar, one matcher per row),
        row i's temperature `temperatures[i]`, the model's top-k and top-p 0.95 as `generate` samples. The
        last prefix's cache is kept: a search whose parent did not change since the last call skips its
        prefill."""
        import copy

        import torch
        from transformers import TopKLogitsWarper, TopPLogitsWarper

        from finetune.llm.kv import cache_name, cache_of, chat_ids, common_prefix, eos_and_pad, keep_last

        model, tok, device = self.model, self.tok, self.device
        eos_ids, pad = eos_and_pad(model, tok)
        enc = chat_ids(tok, prompts)
        n = len(enc)
        if not n:
            return []
        temps = torch.tensor([max(float(x), 1e-4) for x in temperatures], device=device).unsqueeze(1)
        procs = self._processors(extra)
        top_k = getattr(model.generation_config, "top_k", None)
        warpers = ([TopKLogitsWarper(top_k)] if top_k else []) + [TopPLogitsWarper(0.95)]
        rng = torch.Generator(device="cpu").manual_seed(int(seed))
        cache_arg, last = cache_name(model), keep_last(model)
        shared = common_prefix(enc)
        answers: list[list[int]] = [[] for _ in range(n)]
        done = [False] * n
        with torch.inference_mode():
            kw = {}
            if shared:
                key = (id(model), tuple(enc[0][:shared]))
                if self._prefix is None or self._prefix[0] != key:  # a new parent: its prefix run once
                    self._prefix = (key, cache_of(model(input_ids=torch.tensor([enc[0][:shared]], device=device),
                                                         use_cache=True, **last(shared))))
                cache = copy.deepcopy(self._prefix[1])
                cache.batch_repeat_interleave(n)
                kw[cache_arg] = cache
            rests = [e[shared:] for e in enc]
            width = max(len(r) for r in rests)
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in rests], device=device)
            own = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rests], device=device)
            mask = torch.cat([torch.ones(n, shared, dtype=own.dtype, device=device), own], dim=1)
            pos = (shared + own.cumsum(-1) - 1).clamp(min=0)
            res = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **kw, **last(width))
            seq, nxt = ids[:, -1:], pos[:, -1:] + 1
            for step in range(max_new_tokens):
                scores = res.logits[:, -1].float()
                for proc in procs:
                    scores = proc(seq, scores)
                scores = scores / temps
                for warp in warpers:
                    scores = warp(seq, scores)
                ended = torch.tensor(done, device=scores.device) | ~torch.isfinite(scores).any(-1)
                scores[ended] = 0.0  # a finished row, or one its grammar leaves no token: ends (no NaN draw)
                for b in ended.nonzero().flatten().tolist():
                    done[b] = True
                probs = torch.softmax(scores, dim=-1).cpu()
                chosen = torch.multinomial(probs, 1, generator=rng).squeeze(1).tolist()
                for b in range(n):
                    if done[b]:
                        chosen[b] = pad if pad is not None else next(iter(eos_ids))
                    elif chosen[b] in eos_ids:
                        done[b] = True
                    else:
                        answers[b].append(chosen[b])
                if all(done) or step == max_new_tokens - 1:
                    break
                step_ids = torch.tensor(chosen, device=device)[:, None]
                seq = torch.cat([seq, step_ids], dim=1)
                mask = torch.cat([mask, torch.ones(n, 1, dtype=mask.dtype, device=device)], dim=1)
                res = model(input_ids=step_ids, attention_mask=mask, position_ids=nxt, use_cache=True,
                            **{cache_arg: cache_of(res)})
                nxt = nxt + 1
        return [tok.decode(a, skip_special_tokens=True) for a in answers]

    def generate_many(self, prompts, *, max_new_tokens, desc: str = "answers", batch_size: int = 4,
                      progress: bool = True) -> list[str]:
        """Greedy answers, `batch_size` prompts at once with left padding, each batch generating up to
        its largest budget (`max_new_tokens`: one per prompt)."""
        import torch
        from tqdm import tqdm

        tok = self.tok
        tok.padding_side = "left"
        out = []
        bar = tqdm(total=len(prompts), desc=desc, unit="answer", disable=not progress)
        for i in range(0, len(prompts), batch_size):
            batch = prompts[i:i + batch_size]
            enc = [tok.apply_chat_template(m, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
                   for m in batch]
            padded = tok.pad({"input_ids": enc}, return_tensors="pt", padding=True)
            with torch.no_grad():
                gen = self.model.generate(**padded.to(self.model.device), max_new_tokens=max(max_new_tokens[i:i + batch_size]),
                                          do_sample=False, pad_token_id=tok.pad_token_id)
            for row in gen[:, padded["input_ids"].shape[1]:]:
                out.append(tok.decode(row, skip_special_tokens=True))
            bar.update(len(batch))
        bar.close()
        return out


def check(model: str, adapter: str | None = None, url: str | None = None) -> None:
    """A model alias, a local model folder or a Hub id; an adapter folder with adapter_config.json."""
    from pathlib import Path

    if adapter and not (Path(adapter) / "adapter_config.json").is_file():
        raise LLMError(f"{adapter} is not a peft adapter folder (no adapter_config.json)")
    from finetune.models import ALIASES

    p = Path(model).expanduser()
    if model in ALIASES or (p.is_dir() and (p / "config.json").is_file()):
        return
    if p.exists() or model.startswith((".", "/", "~")) or not (model.count("/") == 1 and all(model.split("/"))):
        raise LLMError(f"unknown model {model!r}: use {', '.join(ALIASES)}, a local model folder "
                       "or a Hub id like org/name")


register_backend("transformers", lambda model, adapter=None, **_: TransformersLLM(model, adapter), check)
