"""Starting or joining Ray: the one place that calls ``ray.init``."""
from __future__ import annotations

import logging
import os
import sys


def init_ray(address: str | None = None) -> None:
    """Join the cluster at ``address``, else at ``$RAY_ADDRESS`` (set by ``ray job submit``),
    else start a local Ray with at least 6 logical CPUs, so that on a 2-core laptop sweep trials,
    their train workers (one torch thread each), feature-extraction actors and Ray Data tasks
    all get scheduled and keep both cores busy.

    The terminal stays quiet: what Ray's worker processes print (trials, train workers, Ray
    Data tasks) stays in the session's log folder, whose path is printed on stderr, instead of
    being forwarded here; Ray Data's progress bars are off (the dashboard shows each dataset's
    progress)."""
    import ray
    from ray.data import DataContext

    if ray.is_initialized():
        return
    DataContext.get_current().enable_progress_bars = False  # datasets this process runs
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # its warning that they are off
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ctx = ray.init(address=address, log_to_driver=False)
    else:
        # the workers of a local Ray inherit this environment (Ray Data reads it at import)
        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
        # Train's controller polls workers every 2 s by default; with short epochs that
        # dominates, so a local instance polls faster
        os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
        # one process less per fit: a laptop's node is never preempted (spot clusters keep it on)
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        ctx = ray.init(num_cpus=max(6, os.cpu_count() or 1), log_to_driver=False)
    print(f"Ray worker logs: {ctx.address_info['session_dir']}/logs", file=sys.stderr, flush=True)


def node_shapes(autoscaler_config: str | None = None) -> list[dict[str, float]]:
    """CPUs and GPUs of every node a trial or task could get: the live nodes, plus ``max_workers`` nodes of
    each type the autoscaler may add, read from its config (``autoscaler_config``, else the
    head's ``~/ray_bootstrap_config.yaml`` that ``ray up`` writes, if there is one)."""
    import ray
    import yaml

    resources = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    path = autoscaler_config or os.path.expanduser("~/ray_bootstrap_config.yaml")
    if os.path.exists(path):
        with open(path) as f:
            types = yaml.safe_load(f)["available_node_types"].values()
        resources += [t.get("resources", {}) for t in types for _ in range(t.get("max_workers", 0))]
    return [{k: float(r.get(k, 0)) for k in ("CPU", "GPU")} for r in resources]
