"""Starting or joining Ray: the one place that calls ``ray.init``."""
from __future__ import annotations

import os


def init_ray(address: str | None = None) -> None:
    """Join the cluster at ``address``, else at ``$RAY_ADDRESS`` (set by ``ray job submit``),
    else start a local Ray with at least 6 logical CPUs, so that on a 2-core laptop sweep trials,
    their train workers (one torch thread each), feature-extraction actors and Ray Data tasks
    all get scheduled and keep both cores busy."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return
    # Train's controller polls workers every 2 s by default; with short epochs that
    # dominates, so a local instance polls faster (workers inherit this environment).
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    # one process less per fit: a laptop's node is never preempted (spot clusters keep it on)
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    ray.init(num_cpus=max(6, os.cpu_count() or 1))
