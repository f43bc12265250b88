"""The LLM behind one method, and the registry of backends that provide it.

    from finetune.llm import make_llm, generate_many
    llm = make_llm("smollm2-135m", adapter="runs/lora_fm")            # in process (transformers + peft)
    llm = make_llm("smollm2-135m", url="http://127.0.0.1:8092")       # an OpenAI-compatible server
    text = llm.generate(messages, temperature=0.7, max_new_tokens=256, seed=0, extra={"grammar": gbnf})
    texts = generate_many(llm, prompts, max_new_tokens=[64, 128], desc="base")   # greedy, batched where it can

A backend is a factory `(model, adapter=None, url=None, timeout_s=, retries=, backoff_s=) -> LLM`
registered under a name (`register_backend`); one module per backend (`transformers`, `openai`,
`scripted`), each registering itself on import. `make_llm(..., backend="auto")` takes `openai` for a
URL, else `transformers`. Adding one is one file and one `register_backend` line.

The protocol (`LLM`): `name`, `generate(messages, *, temperature, max_new_tokens, seed, extra)`;
optional: `generate_many(prompts, *, max_new_tokens, desc)` (greedy answers of many prompts; the
default asks one at a time), `sample_many(prompts, *, temperatures, seed, max_new_tokens, extra)` (one
sampled answer per prompt, each at its own temperature, in one batched pass; the default asks one at a
time with seeds seed, seed+1, ...), `count_tokens(text)` (the default estimates 4 characters a token),
`with_adapter(adapter)` (the same base model with a peft adapter), `server_kind` (which request
fields carry a grammar, `finetune.llm.servers`; None: no grammar).
`extra`: fields merged into the request (the grammar of `search.constrain`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable


class LLMError(Exception):
    """The backend cannot be used (unknown model, unreachable server): one-line error, exit 2."""


class LLMServerError(LLMError):
    """A request to a working backend failed after its retries: an outcome of one call, not a bad setup."""


@runtime_checkable
class LLM(Protocol):
    name: str

    def generate(self, messages: list[dict], *, temperature: float = 0.7, max_new_tokens: int = 1024,
                 seed: int = 0, extra: dict | None = None) -> str: ...


@dataclass(frozen=True)
class Backend:
    """A registered backend: `factory` builds it; `check(model, adapter, url)` raises LLMError for a
    bad name or folder before anything is loaded (None: nothing to check)."""
    name: str
    factory: Callable
    check: Callable | None = None


BACKENDS: dict[str, Backend] = {}  # filled by `finetune.llm` (import that, not this module)


def register_backend(name: str, factory: Callable, check: Callable | None = None) -> None:
    BACKENDS[name] = Backend(name, factory, check)


def backend_names() -> tuple[str, ...]:
    return tuple(BACKENDS)


def get_backend(name: str, url: str | None = None) -> Backend:
    """The backend called `name`; `auto`: `openai` for a URL, else `transformers`."""
    if name == "auto":
        name = "openai" if url else "transformers"
    if name not in BACKENDS:
        raise LLMError(f"unknown LLM backend {name!r} (known: {', '.join(BACKENDS)})")
    return BACKENDS[name]


def make_llm(model: str, adapter: str | None = None, url: str | None = None, timeout_s: float = 600.0,
             retries: int = 3, backoff_s: float = 2.0, backend: str = "auto"):
    return get_backend(backend, url).factory(model, adapter=adapter, url=url, timeout_s=timeout_s, retries=retries,
                                             backoff_s=backoff_s)


def check_backend(model: str, adapter: str | None = None, url: str | None = None, backend: str = "auto") -> None:
    """Cheap checks before a run folder is created: names and folders, nothing loaded."""
    b = get_backend(backend, url)
    if b.check is not None:
        b.check(model, adapter, url)


def count_tokens(llm, text: str) -> int:
    """The backend's token count of `text`, else an estimate (4 characters a token)."""
    count = getattr(llm, "count_tokens", None)
    return count(text) if count is not None else max(1, len(text) // 4)


def generate_many(llm, prompts: list[list[dict]], *, max_new_tokens, desc: str = "answers", batch_size: int = 4,
                  progress: bool = True) -> list[str]:
    """Greedy answers of `prompts`, in order. `max_new_tokens`: one number, or one per prompt. A
    backend with its own `generate_many` answers (`batch_size` prompts at once, each batch up to
    its longest budget); else one `generate` call per prompt."""
    budgets = list(max_new_tokens) if isinstance(max_new_tokens, (list, tuple)) else [max_new_tokens] * len(prompts)
    many = getattr(llm, "generate_many", None)
    if many is not None:
        return many(prompts, max_new_tokens=budgets, desc=desc, batch_size=batch_size, progress=progress)
    from tqdm import tqdm

    return [llm.generate(m, temperature=0.0, max_new_tokens=b, seed=0)
            for m, b in tqdm(list(zip(prompts, budgets)), desc=desc, unit="answer", disable=not progress)]


def sample_many(llm, prompts: list[list[dict]], *, temperatures, seed: int = 0, max_new_tokens: int = 64,
                extra: dict | None = None) -> list[str]:
    """One sampled answer per prompt, prompt i at `temperatures[i]` (the same grammar fields `extra` for
    all). A backend with its own `sample_many` answers them in one batched pass; else one `generate` call
    per prompt, seeds `seed + i`. LLMServerError as `generate` raises it."""
    temps = [float(t) for t in temperatures]
    if len(temps) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts, {len(temps)} temperatures")
    many = getattr(llm, "sample_many", None)
    if many is not None:
        return many(prompts, temperatures=temps, seed=seed, max_new_tokens=max_new_tokens, extra=extra)
    kw = {"extra": extra} if extra else {}
    return [llm.generate(m, temperature=t, max_new_tokens=max_new_tokens, seed=seed + i, **kw)
            for i, (m, t) in enumerate(zip(prompts, temps))]
