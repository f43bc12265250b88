"""Search strategies: what proposes the next candidate from the state of the search.

    python -m search run --strategy tpe --evaluator table:cbm-mobilenet --iterations 20 --out runs/tpe-0
    python -m search run --strategy llm --llm smollm2-135m --out runs/llm-0      # the LLM Code Generator

A strategy is an object with the loop's proposer method
`propose(parent_code, parent_row, goal, instruction, memory, seed, extra="", exclude=None) -> answer`
(a mapping with `code`, else a `status` and `error`; `widths` where it chose a width list; the loop
freezes it at once as a `search.proposal.Proposal`) and, optionally, `observe(proposal, row)`, which the
loop calls after every stored iteration with its Proposal (`.widths`, `.code`; and for each stored
iteration on `--resume`). `STRATEGIES` maps a name to a factory `f(ctx) -> strategy`; `ctx` is a
`StrategyContext` (the config, the seed network, the sandbox pool, the input spec, the table evaluator
of a table run, the pre-check). Adding one is one module plus one line here (or `register` from
outside the package, as the tests do).

The non-LLM strategies (`search.strategies.base.WidthsStrategy`) search the seed's width slots
(`search.strategies.space`): a table's choices, or a grid around the seed's widths for any network;
each candidate is the seed realised by the mutator with the chosen widths (built and checked in the
sandbox), and a table looks the widths up without building anything again.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StrategyContext:
    cfg: object
    seed_code: str
    spec: dict
    pool: object
    table: object = None  # corpus.table.TableEvaluator of a table run, else None
    precheck: object = None  # source -> pre-check row (FLOPs, params, latency), or None
    llm: object = None  # the Code Generator's LLM (strategy llm), or a scorer's model given by the caller (tests)
    constrain: object = None  # search.constrain.ConstrainedRequests (strategy llm; a scored pool's generator)
    generator_llm: object = None  # a scored pool's generator model (--scorer-generate N > 0)
    space: object = None  # the seed's width slots, once analysed (a second strategy of the run shares them)


def _space(ctx: StrategyContext):
    from mutator.calls import analyze
    from search.loop import SearchError
    from search.screening import limits
    from search.strategies.space import code_space, table_space

    if ctx.space is not None:
        return ctx.space
    a = analyze(ctx.pool, ctx.seed_code, ctx.spec)
    if not a.ok or not a.groups:
        raise SearchError(f"--strategy {ctx.cfg.strategy}: the seed's widths cannot be analysed: "
                          f"{a.error or 'no width literals'}")
    lim = {k: v for k, v in limits(ctx.cfg).items() if v is not None}
    if ctx.table is not None:
        ctx.space = table_space(ctx.pool, ctx.seed_code, ctx.spec, ctx.table, lim, a)
        return ctx.space
    if lim and ctx.precheck is None:
        raise SearchError(f"--strategy {ctx.cfg.strategy} with limits needs a pre-check (internal: none was built)")
    ctx.space = code_space(ctx.pool, ctx.seed_code, ctx.spec, ctx.precheck, lim, a)
    return ctx.space


def _llm(ctx):
    from search.roles import CodeGenerator

    c = ctx.cfg
    width_choices = _table_choices(ctx)
    return CodeGenerator(ctx.llm, c.temperature, c.max_new_tokens, c.answer_format, c.context, ctx.pool, ctx.spec,
                         width_choices, ctx.constrain, on_realize=ctx.table.remember if ctx.table else None)


def _table_choices(ctx):
    if ctx.table is None:
        return None
    from corpus.spaces import SPACES

    return SPACES[ctx.table.space]["choices"]


def _uniform(ctx):
    from search.strategies.uniform import Uniform

    return Uniform(_space(ctx), ctx.cfg)


def _mutation(ctx):
    from search.roles import RandomProposer
    from search.strategies.mutation import Mutation

    if ctx.table is None:  # any network: a random variant of the parent, as `--llm random` was
        return RandomProposer(ctx.spec, ctx.pool, ctx.cfg.rng_seed)
    return Mutation(_space(ctx), ctx.cfg)


def _largest(ctx):
    from search.strategies.largest import Largest

    return Largest(_space(ctx), ctx.cfg)


def _evolution(ctx):
    from search.strategies.evolution import Evolution

    return Evolution(_space(ctx), ctx.cfg)


def _tpe(ctx):
    from search.strategies.optuna_samplers import OptunaStrategy

    return OptunaStrategy(_space(ctx), ctx.cfg)


def _gp(ctx):
    from search.strategies.optuna_samplers import GP

    return GP(_space(ctx), ctx.cfg)


def _surrogate(ctx):
    from search.loop import SearchError
    from search.strategies.surrogate import PriorError, Surrogate, load_prior

    space = _space(ctx)
    prior = None
    if ctx.cfg.prior:
        try:
            prior, _ = load_prior(ctx.cfg.prior, len(space.choices))
        except PriorError as exc:
            raise SearchError(str(exc)) from None
    return Surrogate(space, ctx.cfg, prior)


def _scored(ctx):
    from finetune.llm import LLMError, make_llm
    from search.loop import SearchError
    from search.strategies.scored import Scored, family_of

    c = ctx.cfg
    llm = ctx.llm or make_llm(c.scorer, c.scorer_adapter, c.scorer_url, timeout_s=c.llm_timeout_s,
                              retries=c.llm_retries, backoff_s=c.llm_backoff_s, backend=c.llm_backend)
    if c.scorer_dtype != "float32":
        if not hasattr(llm, "for_inference"):
            raise SearchError(f"--scorer-dtype {c.scorer_dtype} needs the scorer in process, not served")
        try:
            llm = llm.for_inference(c.scorer_dtype)
        except LLMError as exc:
            raise SearchError(str(exc)) from None
    space = _space(ctx)
    generator = None
    if c.generates:  # the Code Generator over the same slots and choices as the pool's draws
        from search.roles import CodeGenerator

        gen_llm = ctx.generator_llm
        if c.scorer_dtype != "float32" and hasattr(gen_llm, "for_inference"):  # in process: the same dtype
            try:
                gen_llm = gen_llm.for_inference(c.scorer_dtype)
            except LLMError as exc:
                raise SearchError(str(exc)) from None
        generator = CodeGenerator(gen_llm, c.temperature, c.max_new_tokens, c.answer_format, c.context, ctx.pool,
                                  ctx.spec, [list(ch) for ch in space.choices], ctx.constrain)
    other = None
    if c.pool_from is not None:  # another strategy over the same slots, fed the same history: its proposals join
        other = _pool_from(ctx, space)
    return Scored(space, c, llm, family_of(c, ctx.table), generator, other)


def check_pool_from(name: str) -> None:
    """`--pool-from NAME`: a non-LLM strategy that chooses width lists (a one-line error otherwise)."""
    from search.loop import SearchError
    from search.strategies.traits import takes_scorer

    able = sorted(n for n in STRATEGIES if not uses_llm(n) and not takes_scorer(n) and n != "mutation")
    if name not in able:
        raise SearchError(f"--pool-from must be one of {', '.join(able)}, not {name!r}")


def _pool_from(ctx, space):
    """`--pool-from NAME`: the strategy NAME over the scored run's slots (a non-LLM one that chooses width lists)."""
    import dataclasses

    from search.loop import SearchError
    from search.strategies.base import WidthsStrategy

    c = ctx.cfg
    other = STRATEGIES[c.pool_from](dataclasses.replace(ctx, space=space,
                                                        cfg=dataclasses.replace(c, strategy=c.pool_from)))
    if not isinstance(other, WidthsStrategy):
        raise SearchError(f"--pool-from {c.pool_from} does not choose width lists here: use another strategy")
    return other


STRATEGIES = {
    "llm": _llm,
    "random": _uniform,
    "mutation": _mutation,
    "largest": _largest,
    "evolution": _evolution,
    "tpe": _tpe,
    "gp": _gp,
    "surrogate": _surrogate,
    "scored": _scored,
}


def register(name: str, factory, *, uses_llm: bool = False, takes_prior: bool = False,
             takes_scorer: bool = False, reads_costs: bool = False) -> None:
    """Add a strategy (`factory(ctx) -> strategy`) under `name`; `--strategy name` then selects it.
    uses_llm: it proposes with the LLM flags' model; takes_prior: `--prior` warm-starts it; takes_scorer:
    it scores candidates with `--scorer`; reads_costs: its space's `cost()` is measured even without a limit
    (`traits`)."""
    from search.strategies.traits import set_traits

    STRATEGIES[name] = factory
    set_traits(name, uses_llm=uses_llm, takes_prior=takes_prior, takes_scorer=takes_scorer, reads_costs=reads_costs)


def make_strategy(ctx: StrategyContext):
    return STRATEGIES[ctx.cfg.strategy](ctx)


def uses_llm(name: str) -> bool:
    from search.strategies.traits import uses_llm as traits_uses_llm

    return traits_uses_llm(name)
