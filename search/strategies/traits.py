"""What the loop needs to know of a strategy before it makes one, by name: whether it proposes with an
LLM (`--llm`, `--adapter`, `--llm-url` and the Prompt Improver apply), whether `--prior` warm-starts
it, whether it scores candidates with `--scorer`, and whether it reads candidates' costs (FLOPs, params) where
no limit asks for them (a code space then pre-checks its candidates in the sandbox: `largest`'s accuracy gained
per FLOP, `scored`'s prompts and FLOPs niches). Registered with the strategy (`search.strategies.register(name, factory, uses_llm=..., takes_prior=...)`);
this module imports nothing, so `search.loop` reads it without an import cycle.
"""
from __future__ import annotations

TRAITS: dict[str, dict[str, bool]] = {"llm": {"uses_llm": True}, "surrogate": {"takes_prior": True},
                                      "largest": {"reads_costs": True},
                                      "scored": {"takes_scorer": True, "reads_costs": True}}


def set_traits(name: str, *, uses_llm: bool = False, takes_prior: bool = False, takes_scorer: bool = False,
               reads_costs: bool = False) -> None:
    TRAITS[name] = {"uses_llm": uses_llm, "takes_prior": takes_prior, "takes_scorer": takes_scorer,
                    "reads_costs": reads_costs}


def uses_llm(name: str) -> bool:
    return TRAITS.get(name, {}).get("uses_llm", False)


def takes_prior(name: str) -> bool:
    return TRAITS.get(name, {}).get("takes_prior", False)


def takes_scorer(name: str) -> bool:
    """Whether the strategy scores candidates with `--scorer MODEL` (required there, refused elsewhere)."""
    return TRAITS.get(name, {}).get("takes_scorer", False)


def reads_costs(name: str) -> bool:
    """Whether the strategy reads candidates' FLOPs and params even where no limit is set."""
    return TRAITS.get(name, {}).get("reads_costs", False)


def with_scorer() -> list[str]:
    return sorted(n for n in TRAITS if takes_scorer(n))


def with_prior() -> list[str]:
    return sorted(n for n in TRAITS if takes_prior(n))
