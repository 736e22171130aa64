"""Whether Ray could ever schedule a request: checked before a run or sweep starts, since a
request no node can meet waits silently for ever."""
from __future__ import annotations

import os

Shape = dict[str, float]  # {"CPU": n, "GPU": n}


def node_shapes(autoscaler_config: str | None = None) -> list[Shape]:
    """CPUs and GPUs of every node a request could get: the live nodes, plus ``max_workers`` nodes
    of each type the autoscaler may add, read from its config (``autoscaler_config``, else the
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


def fits(need: Shape, node: Shape) -> bool:
    return all(node.get(k, 0) >= v for k, v in need.items() if v > 0)


def unfit(requests: dict[str, Shape], together: tuple[str, Shape], shapes: list[Shape]) -> str:
    """Why some request would wait for ever on nodes of these ``shapes`` ("" if none would):
    each of ``requests`` ({what: need}) must fit on one node, and ``together`` (what, need)
    on all the nodes together."""
    for what, need in requests.items():
        if not any(fits(need, node) for node in shapes):
            nodes = sorted({str(n) for n in shapes})
            return f"{what} needs {need}, more than any node has (nodes: {', '.join(nodes)}); it would wait forever"
    total: Shape = {}
    for shape in shapes:
        for k, v in shape.items():
            total[k] = total.get(k, 0) + v
    what, need = together
    if not fits(need, total):
        return f"{what} need {need} at once, more than all nodes have together ({total}); it would wait forever"
    return ""


def check_train_fits(cfg, side_tasks: dict[str, Shape], shapes: list[Shape]) -> None:
    """Raise ValueError, naming the fields, when the train workers of ``cfg`` (a TrainConfig) or
    the method's ``side_tasks`` could never be scheduled on nodes of these ``shapes``."""
    worker = {"CPU": cfg.cpus_per_worker, "GPU": cfg.gpus_per_worker}
    requests = {"cpus_per_worker/gpus_per_worker: a train worker": worker, **side_tasks}
    together = (f"workers: {cfg.workers} train workers", {k: cfg.workers * v for k, v in worker.items()})
    why = unfit(requests, together, shapes)
    if why:
        raise ValueError(why)
