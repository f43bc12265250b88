"""The LLM behind one method: `generate(messages, temperature=, max_new_tokens=, seed=) -> str`.

Interchangeable backends:
- `TransformersLLM("smollm2-135m" | hub id | folder, adapter=DIR)`: local transformers (+ peft
  adapter); the same model names as `finetune`.
- `OpenAILLM(url, model)`: any OpenAI-compatible chat server (vLLM, Ollama, llama.cpp's server,
  `python -m llama_cpp.server`); an adapter is chosen by model name, as those servers do.
- `ScriptedLLM(answers)`: a test double that replays answers (a list, or a function of the prompt).

A server that fails a request (HTTP error, dropped connection, time-out, malformed answer) is
asked again `retries` times, waiting `backoff_s`, then twice as long each time; then `generate`
raises `LLMServerError`, which the search records as an `llm_error` iteration (the run goes on).
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request


class LLMError(Exception):
    """The backend cannot be used (unknown model, unreachable server): one-line error, exit 2."""


class LLMServerError(LLMError):
    """A request to a working backend failed after its retries: an outcome of one call, not a bad setup."""


class ScriptedLLM:
    def __init__(self, answers, name: str = "scripted"):
        self.answers = answers
        self.name = name
        self.calls: list[list[dict]] = []
        self.extras: list[dict] = []  # the constrained-decoding fields of each call

    def generate(self, messages, *, temperature=0.7, max_new_tokens=1024, seed=0, extra=None) -> str:
        self.calls.append(messages)
        self.extras.append(dict(extra or {}))
        if callable(self.answers):
            return self.answers(messages)
        return self.answers[(len(self.calls) - 1) % len(self.answers)]


class TransformersLLM:
    def __init__(self, model: str, adapter: str | None = None, device: str = "auto"):
        import torch

        from finetune.models import FinetuneError, load_model, load_tokenizer, resolve_model

        try:
            path = resolve_model(model)
            self.tok = load_tokenizer(path)
            self.model = load_model(path)
        except FinetuneError as exc:
            raise LLMError(str(exc)) from None
        if adapter:
            from peft import PeftModel

            try:
                self.model = PeftModel.from_pretrained(self.model, adapter)
            except Exception as exc:  # wrong folder, wrong base model
                raise LLMError(f"cannot load adapter {adapter}: {type(exc).__name__}: {str(exc)[:160]}") from None
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.model.to(device).eval()
        self.name = model + (f"+{adapter}" if adapter else "")
        self.grammar_note: str | None = None  # why grammars are not applied (said once), None: they are

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


# client errors that asking again cannot fix (a prompt longer than the context, a wrong model name)
_FINAL_HTTP = frozenset(range(400, 500)) - {408, 429}


class OpenAILLM:
    """Chat completions over HTTP (stdlib only): `timeout_s` per request, `retries` more tries after a
    failure with exponential back-off from `backoff_s` (4xx answers other than 408/429 are not retried)."""

    def __init__(self, url: str, model: str, timeout_s: float = 600.0, check: bool = True, retries: int = 3,
                 backoff_s: float = 2.0):
        self.url = url.rstrip("/")
        if not self.url.endswith("/v1"):
            self.url += "/v1"
        self.model = model
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.name = f"{model}@{url}"
        if check:
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=min(10.0, timeout_s)) as r:
                    json.loads(r.read())
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                raise LLMError(f"cannot reach an OpenAI-compatible server at {url} ({reason})") from None

    def generate(self, messages, *, temperature=0.7, max_new_tokens=1024, seed=0, extra=None) -> str:
        """extra: fields merged into the request body (the grammar of `search.constrain`)."""
        body = json.dumps({"model": self.model, "messages": messages, "temperature": temperature,
                           "max_tokens": max_new_tokens, "seed": seed, **(extra or {})}).encode()
        req = urllib.request.Request(f"{self.url}/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                    data = json.loads(r.read())
                return data["choices"][0]["message"]["content"] or ""
            except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
                final = isinstance(exc, urllib.error.HTTPError) and exc.code in _FINAL_HTTP
                if final or attempt == self.retries:
                    why = f"HTTP {exc.code} {exc.reason}" if isinstance(exc, urllib.error.HTTPError) else \
                        f"{type(exc).__name__}: {exc}"
                    raise LLMServerError(f"LLM server {self.url} failed after {attempt + 1} "
                                         f"tr{'y' if attempt == 0 else 'ies'}: {' '.join(why.split())[:160]}") from None
                time.sleep(self.backoff_s * 2 ** attempt)
        return ""


def check_backend(model: str, adapter: str | None = None, url: str | None = None) -> None:
    """Cheap checks before a run folder is created: names and folders, nothing loaded."""
    from pathlib import Path

    if url:
        if not url.startswith(("http://", "https://")):
            raise LLMError(f"--llm-url must start with http:// or https://, not {url!r}")
        return
    if adapter and not (Path(adapter) / "adapter_config.json").is_file():
        raise LLMError(f"{adapter} is not a peft adapter folder (no adapter_config.json)")
    from finetune.models import ALIASES

    p = Path(model).expanduser()
    if model in ALIASES or (p.is_dir() and (p / "config.json").is_file()):
        return
    if p.exists() or model.startswith((".", "/", "~")) or not (model.count("/") == 1 and all(model.split("/"))):
        raise LLMError(f"unknown model {model!r}: use {', '.join(ALIASES)}, a local model folder "
                       "or a Hub id like org/name")


def make_llm(model: str, adapter: str | None = None, url: str | None = None, timeout_s: float = 600.0,
             retries: int = 3, backoff_s: float = 2.0):
    if url:
        return OpenAILLM(url, adapter or model, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s)
    return TransformersLLM(model, adapter)
