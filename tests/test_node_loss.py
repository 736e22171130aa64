"""Training survives losing a node. On a simulated cluster (``ray.cluster_utils.Cluster``: a
head and two worker nodes), a run with two DDP workers loses the node they run on after its
first checkpoint; Train (FailureConfig) restarts the workers on the node that remains and they
continue from that checkpoint, so every epoch is trained exactly once.

The cluster is this test's own, so the scenario runs in a subprocess (this file as a script);
the session's Ray is left alone."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest


def scenario(data: str, labels: str, run_dir: str) -> dict:
    """Run it; returns what the test checks."""
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors

    from raysup import runner
    from raysup.methods import make_config

    with socket.socket() as sock:  # a free port: 8265 may be another cluster's
        sock.bind(("127.0.0.1", 0))
        dashboard_port = sock.getsockname()[1]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "dashboard_port": dashboard_port})  # the driver's node
    nodes = {n.node_id: n for n in (cluster.add_node(num_cpus=3) for _ in range(2))}  # room for both workers each
    ray.init(address=cluster.address, log_to_driver=False)

    def train_nodes() -> set[str]:
        actors = list_actors(address=cluster.gcs_address, filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
        return {a.node_id for a in actors}

    cfg = make_config("supervised", "tiny", {"workers": 2, "epochs": 4, "batch_size": 4, "max_failures": 1})
    result, error = {}, []

    def train():
        try:
            result["metrics"] = runner.train(cfg, data, run_dir, labels=labels)
        except Exception as e:  # noqa: BLE001 - reported below
            error.append(repr(e))

    t = threading.Thread(target=train)
    t.start()
    lost, after = None, set()
    while lost is None and t.is_alive():
        if os.path.exists(os.path.join(run_dir, "metrics.jsonl")):  # epoch 0 is checkpointed
            lost = sorted(train_nodes())[0]
            cluster.remove_node(nodes[lost], allow_graceful=False)
        time.sleep(0.2)
    while t.is_alive() and (not after or lost in after):  # the restarted workers
        after = train_nodes()
        time.sleep(0.2)
    t.join()
    ray.shutdown()
    cluster.shutdown()
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        epochs = [json.loads(line)["epoch"] for line in f]
    return {"error": error, "lost": lost, "nodes": sorted(nodes), "after": sorted(after), "epochs": epochs}


@pytest.mark.slow  # ~2 min: a three-node cluster of its own, four epochs and a restart
def test_training_survives_losing_a_node(small_prepared, tmp_path):
    data, labels = small_prepared
    temp = tempfile.mkdtemp(prefix="rsnodes-")  # the cluster's sessions and address file: not /tmp/ray
    try:
        out = subprocess.run([sys.executable, __file__, data, labels, str(tmp_path / "run")], env={**os.environ, "RAY_TMPDIR": temp},
                             capture_output=True, text=True, timeout=900)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert not r["error"], r
    assert r["lost"] in r["nodes"], "the workers' node was not killed"
    assert r["after"] and r["lost"] not in r["after"] and set(r["after"]) < set(r["nodes"]), r  # restarted on the other node
    assert r["epochs"] == [0, 1, 2, 3], r  # continued from the checkpoint: no epoch trained twice


if __name__ == "__main__":
    print(json.dumps(scenario(*sys.argv[1:4])))
