"""The sandbox runs registered handlers only (`mutator.handlers`): the pool refuses any other, a worker is told
at start which ones it may run, and every result goes through its handler's registered check."""
import pytest

from mutator import handlers
from mutator.handlers import check_result, lookup, register_handler, start_config
from mutator.results import INVALID, validate_row
from mutator.sandbox import SandboxError, WorkerPool

ECHO = "mutator.results:valid_strings"  # a function of the tree that answers its payload: a handler for the test


@pytest.fixture
def echo():
    """ECHO registered for one test, with a check that marks what it saw."""
    register_handler(ECHO, check=lambda r: {**r, "checked": True})
    yield ECHO
    handlers._REGISTRY.pop(ECHO, None)


@pytest.fixture(scope="module")
def pool():
    p = WorkerPool(1, timeout_s=60, memory_mb=3072, isolate="none")
    yield p
    p.close()


def test_corpus_registers_its_evaluation_with_its_row_check_and_warm_modules():
    from corpus.handlers import EVALUATE

    assert lookup(EVALUATE).check is validate_row
    cfg = start_config()
    assert EVALUATE in cfg["handlers"] and "mutator.analysis:validate" in cfg["handlers"]
    assert {"corpus.pipeline", "corpus.train", "mutator.analysis"} <= set(cfg["warm"])
    assert check_result(EVALUATE, {"status": "ok", "accuracy": 2.0})["status"] == INVALID


def test_a_handler_is_module_colon_function():
    for bad in ("corpus.pipeline", "corpus.pipeline:", ":evaluate", "os.system; rm:x", 3):
        with pytest.raises(ValueError):
            register_handler(bad)
    with pytest.raises(ValueError):
        register_handler("mutator.x:y", warm="corpus.train")  # a string, not a list of modules
    assert lookup("mutator.x:y") is None


def test_an_unregistered_handler_is_refused_and_its_result_fails():
    assert lookup("mutator.results:clean_text") is None
    r = check_result("mutator.results:clean_text", {"status": "ok"})
    assert r["status"] == INVALID and "not registered" in r["error"]


def test_the_pool_refuses_an_unregistered_handler(pool):
    with pytest.raises(SandboxError, match="not registered"):
        pool.call("mutator.results:clean_text", {"status": "ok"})
    with pytest.raises(SandboxError, match="not registered"):
        list(pool.imap("corpus.nothing:here", [{}]))
    assert pool.call("mutator.analysis:validate", {"source": "x = 1", "spec": {"in_shape": [1, 1, 8, 8],
                                                                              "classes": 4}})["status"] != "crash"


def test_a_worker_runs_only_what_it_was_told_at_start(pool, echo):
    worker = pool._all[0]
    assert echo not in worker.handlers  # registered after it started
    # asked directly, the worker refuses it: its start config, not the parent's registry, is what it runs
    refused = worker.call(echo, {"status": "ok"}, 30)
    assert refused["status"] == "error" and "unknown handler" in refused["error"], refused
    # through the pool, a fresh worker is told of it, and the result goes through its check
    assert pool.call(echo, {"status": "ok", "x": 1}) == {"status": "ok", "x": 1, "checked": True}
    assert echo in pool._all[0].handlers and pool._all[0] is not worker
