"""The k-means assignment pass runs across the cluster. On a simulated cluster
(``ray.cluster_utils.Cluster``: a head and two worker nodes), :func:`cluster_features` over a
features folder of several Parquet files runs its ``assign_fragments`` tasks on at least two nodes
(Ray's state API records each task's node), and every row gets its label.

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
import time

import pytest


def scenario(features: str, out: str) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.state import list_tasks

    from raysup.cluster_features import Clustering, cluster_features, parquet_files
    from raysup.clustering import KMeansConfig
    from raysup.data.schema import vectors

    rng = np.random.default_rng(0)
    os.makedirs(features)
    for f in range(8):  # 8 files: 8 sample and 8 assign tasks
        n = 500
        pq.write_table(pa.table({"video_id": [f"f{f}v{i // 4:04d}" for i in range(n)], "clip_index": pa.array(np.arange(n) % 4, pa.int32()),
                                 "video": vectors(rng.normal(size=(n, 8)))}), os.path.join(features, f"part-{f}.parquet"))
    with socket.socket() as sock:  # a free port: 8265 may be another cluster's
        sock.bind(("127.0.0.1", 0))
        dashboard_port = sock.getsockname()[1]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "dashboard_port": dashboard_port})  # the driver's node: no tasks
    nodes = sorted(cluster.add_node(num_cpus=2).node_id for _ in range(2))
    ray.init(address=cluster.address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    stats = cluster_features(features, out, [Clustering("label", ("video",))], KMeansConfig(4), item_bytes=1)  # a task per row group
    ran: set[str] = set()
    for _ in range(60):  # task events reach the state API within a few seconds
        tasks = list_tasks(address=cluster.gcs_address, limit=10_000, detail=True, raise_on_missing_output=False)
        ran = {t.node_id for t in tasks if "assign_fragments" in t.name and t.state == "FINISHED"}
        if len(ran) >= 2:
            break
        time.sleep(0.5)
    rows = pq.read_table(parquet_files(out)).num_rows
    ray.shutdown()
    cluster.shutdown()
    return {"nodes": nodes, "assign_nodes": sorted(ran), "rows": rows, "stats_rows": stats["rows"]}


@pytest.mark.slow  # ~1 min: a three-node cluster of its own
def test_assignment_runs_on_several_nodes(tmp_path):
    temp = tempfile.mkdtemp(prefix="rsnodes-")  # the cluster's sessions and address file: not /tmp/ray
    try:
        out = subprocess.run([sys.executable, __file__, str(tmp_path / "features"), str(tmp_path / "labels")],
                             env={**os.environ, "RAY_TMPDIR": temp}, capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["rows"] == r["stats_rows"] == 4000, r
    assert len(r["assign_nodes"]) >= 2 and set(r["assign_nodes"]) <= set(r["nodes"]), r


if __name__ == "__main__":
    print(json.dumps(scenario(*sys.argv[1:3])))
