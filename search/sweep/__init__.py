"""`python -m search sweep SPEC.yaml --out DIR`: a grid of `search run`s as one resumable job.

    python -m search sweep benchmarks/sweep_example.yaml --out sweeps/example
    python -m search sweep spec.yaml --out sweeps/big --executor ray --address 10.0.0.5:6379 --parallel 32
    python -m search sweep spec.yaml --out sweeps/big --evaluators mobilenet    # part of the grid first

The spec (YAML; every key is checked before anything starts, errors are one line with exit 2):

    defaults: {iterations: 20}               # `search run` flags shared by every run (optional)
    configurations:                          # name -> `search run` flags (the name is the run's --label)
      random: {strategy: random}
      tuned: {llm: smollm2, llm_url: "http://127.0.0.1:8092"}          # the user's server
      served: {gguf: models/tuned.q8_0.gguf, gguf_args: [--n_ctx, "4096"]}   # served by the sweep
      tuned-r: {llm: smollm2, llm_url: "http://127.0.0.1:8093", evaluators: [mobilenet]}  # only there
    seeds: 10                                # rng seeds: a count (0..9) or a list [0, 3, 7]
    evaluators: [table:cbm-mobilenet, profile]     # or a mapping name -> flags, e.g.
    #   mobilenet-budget: {evaluator: "table:cbm-mobilenet", max_flops: 1.2e8}

Flags are `search run`'s own (`llm_url` or `llm-url`): each is looked up in that command's parser
and its value converted and checked the way the command line would be (a switch takes true/false);
the resulting config of every configuration x evaluator then passes `search run`'s own checks
(`check_config`, `validate`: benchmark tables present, model names, URLs). `out`, `resume`,
`rng_seed` and `label` are the sweep's to set; `evaluator` only names an evaluator entry's evaluator.
A flag set by both a configuration and an evaluator entry is an error (the spec must say which).
A configuration's `evaluators: [name, ...]` (a sweep key) runs it on those evaluator entries only: e.g.
an adapter tuned without one space (or seed family) runs only where it searches the held-out one.
`--evaluators a,b` / `--configurations x,y` run only those evaluator entries / configurations of the
spec (a configuration left out, or one that runs on no selected evaluator, is neither checked nor
served: its gguf file may not exist yet); the same command without them later runs the rest, keeping
what is done. `search compare` runs for an evaluator once every selected run of it finished.

Each cell (configuration x seed x evaluator) is one `python -m search run ... --out
DIR/runs/<evaluator>/<configuration>-<seed>` subprocess (the evaluator's name is the part after
`table:`), its output appended to `DIR/logs/<evaluator>/<configuration>-<seed>.log`. Cells run in
parallel: `--executor local` (default) keeps `--parallel` processes (default: the CPU cores) going;
`--executor ray` runs each command as a Ray task (1 CPU) on a local instance, or on the cluster at
`--address` (else `RAY_ADDRESS`): every node then needs nasforge importable and DIR on a shared file
system, and gguf configurations (served on the driver's loopback) are refused.

Resuming: run the same command again after a kill (kill -9 included). A run whose store holds all
its iterations (or that ended with exit 0 on the same flags, e.g. at its --time-budget-s) is done and
is not run again; a started store is continued with `--resume` (the loop loses at most the iteration
in flight); a folder without a store, or with one that never got past its start, starts fresh; a
store that is not readable is moved aside (`run.sqlite.invalid-<time>`) and the run starts fresh.
Every run process dies with the sweep (PR_SET_PDEATHSIG; a Ray task on the sweep's host watches the
sweep's process and kills its run), so a killed sweep leaves none behind to write a store twice; one sweep at a time holds DIR (a lock file). `DIR/sweep.jsonl` (a
`mutator.records` journal) records each invocation's spec, every run's start (fresh/resume, the
iterations it had) and end (exit code, iterations), moved-aside stores and compares.

A configuration with `gguf: FILE` is served by the sweep with llama.cpp's OpenAI-compatible server
(`python -m llama_cpp.server`, from `llama-cpp-python[server]`) on 127.0.0.1 and a free port, started
before the runs (its log: `DIR/logs/server-<configuration>.log`), waited for until `GET /v1/models`
answers, and stopped at the end, on errors and on Ctrl-C; its runs get `--llm-url` (resumable) and
`--llm` = the configuration's `llm` flag (default: the file's stem), which is the server's
`--model_alias`.

One progress bar covers the sweep: iterations stored / total across runs (its rate and ETA), runs
done / total. At the end `search compare` runs per evaluator over its runs into
`DIR/compare-<evaluator>` when all of them finished; failed runs are listed (their logs) and the
sweep exits 2: running it again retries them.
"""
from __future__ import annotations

from search.sweep.core import SweepConfig, compare_runs, execute, leftover_runs, lock, sweep, triage, wait_for_leftovers
from search.sweep.executors import LocalExecutor, RayExecutor
from search.sweep.runs import (ROOT, child_env, driver_gone, process_identity, run_state, run_task, start_run,
                               stored_iterations)
from search.sweep.servers import LlamaServers
from search.sweep.spec import (NAME, SERVER_KEYS, SPEC_KEYS, SWEEP_FLAGS, Cell, Spec, SweepError, check_flags,
                               check_gguf, flag_argv, load_spec, read_spec, run_parser, search_config)

__all__ = ["ROOT", "NAME", "SERVER_KEYS", "SPEC_KEYS", "SWEEP_FLAGS", "Cell", "LlamaServers", "LocalExecutor",
           "RayExecutor", "Spec", "SweepConfig", "SweepError", "check_flags", "check_gguf", "child_env",
           "compare_runs", "driver_gone", "execute", "flag_argv", "leftover_runs", "load_spec", "lock",
           "process_identity", "read_spec", "run_parser", "run_state", "run_task", "search_config", "start_run",
           "stored_iterations", "sweep", "triage", "wait_for_leftovers"]
