"""The sandbox's handlers: what a worker may run, each registered by the package that owns it.

    register_handler("corpus.pipeline:evaluate", check=validate_row, warm=("corpus.train",))  # corpus.handlers
    pool.call("corpus.pipeline:evaluate", payload)   # SandboxError unless the owner registered it first

A handler is "package.module:function": the function runs in a sandbox child on untrusted model code
and answers one JSON object. The package that defines it registers it (a layer names the layers below
it, never one above: `mutator` knows no handler of `corpus`, `finetune` or `search`), with
- check: its result check, `check(result) -> result` for `mutator.results.checked` (which gives it a
  result with valid strings and applies the checks every result gets to what it returns); None: only
  those common checks;
- warm: modules the worker imports once before forking (the handler's own module always), so every
  candidate inherits them instead of importing them again.

The registry lives in the parent process. `mutator.sandbox.WorkerPool` refuses a handler that is not
registered, passes the registered names and the modules to warm to each worker in its start config
(the worker is a separate program: nothing of this module's state reaches it but that JSON), and a
worker runs no other handler. A handler registered after a worker started gets a fresh worker.
mutator's own handlers (`mutator.analysis`'s) are registered here; `mutator.repair` registers its own.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from mutator.results import checked, failure, params_check, variants_check

NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


@dataclass(frozen=True)
class Handler:
    name: str  # "package.module:function"
    check: Callable[[dict], dict] | None = None
    warm: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        return self.name.split(":", 1)[0]


_REGISTRY: dict[str, Handler] = {}


def register_handler(name: str, *, check: Callable[[dict], dict] | None = None, warm=()) -> Handler:
    """Let sandbox workers run `name` ("package.module:function"), its results checked by `check`.
    Registering a name again replaces its entry (a module imported twice registers twice)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(f"a handler is 'package.module:function', not {name!r}")
    if isinstance(warm, str) or not all(isinstance(m, str) and NAME.fullmatch(m + ":x") for m in warm):
        raise ValueError(f"warm is a list of module names, not {warm!r}")
    entry = Handler(name, check, tuple(warm))
    _REGISTRY[name] = entry
    return entry


def lookup(name: str) -> Handler | None:
    return _REGISTRY.get(name) if isinstance(name, str) else None


def start_config() -> dict:
    """What a worker is told at start: the handlers it may run, the modules it imports before forking."""
    handlers = dict(_REGISTRY)
    warm = dict.fromkeys(m for h in handlers.values() for m in (*h.warm, h.module))
    return {"handlers": sorted(handlers), "warm": list(warm)}


def check_result(handler: str, result) -> dict:
    """A sandboxed handler's result as the parent may use it: its registered check (`mutator.results.checked`);
    an unregistered handler's result is a failed one. Never raises."""
    entry = lookup(handler)
    if entry is None:
        return failure(f"handler {handler!r} is not registered")
    return checked(result, entry.check)


register_handler("mutator.analysis:analyze", warm=("mutator.probe",))
register_handler("mutator.analysis:variants", check=variants_check)
register_handler("mutator.analysis:validate", check=params_check)
