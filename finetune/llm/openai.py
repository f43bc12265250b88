"""Any OpenAI-compatible chat server: vLLM, Ollama, llama.cpp's `llama-server`, `python -m llama_cpp.server`.

    from finetune.llm import make_llm
    llm = make_llm("smollm2-135m", url="http://127.0.0.1:8092")              # the model name the server knows
    llm = make_llm("smollm2-135m", adapter="lora_fm", url="http://...")     # an adapter is chosen by name

Chat completions over HTTP (stdlib only): `timeout_s` per request. A request that fails (HTTP
error, dropped connection, time-out, malformed answer) is asked again `retries` times, waiting
`backoff_s`, then twice as long each time; then `generate` raises `LLMServerError`, which the search
records as an `llm_error` iteration (the run goes on). 4xx answers other than 408/429 are not
retried. Which request field carries a grammar depends on the server (`finetune.llm.servers`).
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from finetune.llm.base import LLMError, LLMServerError, register_backend

# client errors that asking again cannot fix (a prompt longer than the context, a wrong model name)
_FINAL_HTTP = frozenset(range(400, 500)) - {408, 429}


class OpenAILLM:
    def __init__(self, url: str, model: str, timeout_s: float = 600.0, check: bool = True, retries: int = 3,
                 backoff_s: float = 2.0):
        self.given_url = url
        self.url = url.rstrip("/")
        if not self.url.endswith("/v1"):
            self.url += "/v1"
        self.model = model
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.name = f"{model}@{url}"
        self.server_kind: str | None = None  # set by whoever detected or was told it (search.constrain)
        if check:
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=min(10.0, timeout_s)) as r:
                    json.loads(r.read())
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                raise LLMError(f"cannot reach an OpenAI-compatible server at {url} ({reason})") from None

    def with_adapter(self, adapter: str) -> "OpenAILLM":
        """The adapter the server serves under the name `adapter` (vLLM --lora-modules, Ollama, ...)."""
        return OpenAILLM(self.given_url, adapter, self.timeout_s, check=False, retries=self.retries,
                         backoff_s=self.backoff_s)

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


def make(model: str, adapter: str | None = None, url: str | None = None, timeout_s: float = 600.0, retries: int = 3,
         backoff_s: float = 2.0, **_):
    if not url:
        raise LLMError("the openai backend needs --llm-url")
    return OpenAILLM(url, adapter or model, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s)


def check(model: str, adapter: str | None = None, url: str | None = None) -> None:
    if not url or not url.startswith(("http://", "https://")):
        raise LLMError(f"--llm-url must start with http:// or https://, not {url!r}")


register_backend("openai", make, check)
