"""The sandbox handlers corpus owns, registered with the sandbox (`mutator.handlers`) on import.

    from corpus.handlers import EVALUATE
    row = pool.call(EVALUATE, payload)   # corpus.pipeline.evaluate in a worker, checked by validate_row

Every module that calls the pool with one of these imports this module first (`corpus.evaluator`
does, so its callers do): a handler nobody registered is refused.
"""
from __future__ import annotations

from mutator.handlers import register_handler
from mutator.results import validate_row

# measuring and training: imported by the worker once, before it forks a child per candidate
EVALUATE = register_handler("corpus.pipeline:evaluate", check=validate_row,
                            warm=("corpus.measure", "corpus.train", "corpus.zerocost", "fvcore.nn")).name
