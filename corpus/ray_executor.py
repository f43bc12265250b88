"""`--executor ray`: each variant is one Ray task (one GPU each where GPUs exist, else CPUs).

Connects to the cluster named by `RAY_ADDRESS`, or starts a local instance. Each task prepares the
data set on its node (node-local cache) and profiles in the same sandbox as the local executor,
so isolation and statuses are identical. Results stream back as tasks finish. A task runs a
variant's `--proxy-seeds` requests (`corpus.evaluator.evaluate_seeds`) and returns its one row.
"""
from __future__ import annotations

import os


def _task(payload: dict, dataset: str, data_dir, timeout_s: float, memory_mb: int, gpu: bool, cpus: int,
          proxy_seeds: int = 1) -> dict:
    from corpus.data import prepare
    from corpus.evaluator import call, evaluate_seeds
    from mutator.sandbox import WorkerPool

    payload = {**payload, "data_path": str(prepare(dataset, data_dir))}
    pool = WorkerPool(1, timeout_s=timeout_s, memory_mb=memory_mb,
                      threads_per_worker=cpus, gpu=gpu)
    try:
        # scored on the node, outside the sandbox; the seed policy's K runs one after the other in this task
        return evaluate_seeds(lambda p: call(pool, p), payload, proxy_seeds)
    finally:
        pool.close()


def run_ray(cfg, device: str, jobs):
    try:
        import ray
    except ImportError:
        from corpus.errors import CorpusError

        raise CorpusError("--executor ray needs Ray: pip install 'ray[default]'") from None
    started = False
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
        started = True
    gpu = device != "cpu"
    cpus = 1 if gpu else max(1, int(ray.available_resources().get("CPU", 1)) // max(1, cfg.workers))
    task = ray.remote(num_gpus=1 if gpu else 0, num_cpus=cpus, max_retries=0)(_task)
    try:
        refs = {task.remote(p, cfg.dataset, cfg.data_dir, cfg.timeout_s, cfg.memory_mb, gpu, cpus,
                            getattr(cfg, "proxy_seeds", 1)): i
                for i, (_, _, p) in enumerate(jobs)}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            i = refs.pop(done[0])
            try:
                res = ray.get(done[0])
            except Exception as exc:  # the task itself died (node lost, ...)
                res = {"status": "crash", "error": f"ray task failed: {type(exc).__name__}"}
            yield jobs[i][0], jobs[i][1], res
    finally:
        if started:
            ray.shutdown()
