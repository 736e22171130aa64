"""Autoscaling, on Ray's local simulation of a cloud (the fake multinode provider): a head
without CPUs and worker node types shaped like cluster.yaml's, all starting at zero. A sweep
makes the autoscaler add a CPU node, completes, and the node goes away once idle. A sweep that
no node type can ever hold fails at once with a clear error instead of waiting forever
(this check runs by default; the sweep on the simulated cluster is marked slow)."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict

import pytest
import yaml
from ray.util.state.exception import RayStateApiException

from raysup.sweep import Sweep, check_fits, node_shapes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, "tests", "sweep_driver.py")


def fake_cluster_config(gcs_address: str = "") -> dict:
    """cluster.yaml's node types on the fake provider, with at most 4 CPUs per node and one
    node per type (this machine has 2 cores), scaled down 6 s after idling; the nodes it adds
    join the head at ``gcs_address``."""
    with open(os.path.join(ROOT, "cluster.yaml")) as f:
        real = yaml.safe_load(f)
    types = {"ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0}}  # the fake provider's head type
    for name, t in real["available_node_types"].items():
        if name != real["head_node_type"]:
            types[name] = {"resources": {**t["resources"], "CPU": min(4, t["resources"]["CPU"])}, "node_config": {}, "min_workers": 0, "max_workers": 1}
    empty = ["initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
             "head_start_ray_commands", "worker_start_ray_commands", "cluster_synced_files", "rsync_exclude", "rsync_filter"]
    return {
        "cluster_name": "raysup-fake", "max_workers": 2, "upscaling_speed": 1.0, "idle_timeout_minutes": 0.1,
        "provider": {"type": "fake_multinode", "gcs_address": gcs_address, "use_node_id_as_ip": True, "disable_node_updaters": True, "disable_launch_config_check": True},
        "available_node_types": types, "head_node_type": "ray.head.default", "auth": {}, "docker": {}, "file_mounts": {},
        "file_mounts_sync_continuously": False, **{k: [] for k in empty},
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_leftovers(marker: str) -> None:
    """SIGKILL the processes whose command line names ``marker`` (this test's temp folder) and
    their children: nodes the autoscaler started outlive the head when the test fails early."""
    procs = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:  # ended meanwhile
            continue
        procs[int(pid)] = (ppid, cmd)
    ours = {pid for pid, (_, cmd) in procs.items() if marker in cmd}
    for pid in ours | {pid for pid, (ppid, _) in procs.items() if ppid in ours}:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _worker_nodes(dashboard: str) -> list[dict]:
    """Alive nodes other than the head: {id, resources_total}, from the state API."""
    from ray.util.state import list_nodes

    return [n.__dict__ for n in list_nodes(address=dashboard, filters=[("state", "=", "ALIVE")], detail=True, raise_on_missing_output=False) if not n.is_head_node]


@pytest.mark.slow  # ~2 min: a head, nodes added on demand, a sweep, 6 s idle timeout
def test_sweep_on_an_autoscaling_cluster(small_prepared, tmp_path):
    from ray.util import get_node_ip_address

    data, labels = small_prepared
    port, dash = _free_port(), _free_port()
    address = f"{get_node_ip_address()}:{port}"
    config = tmp_path / "fake_cluster.json"
    config.write_text(json.dumps(fake_cluster_config(address)))
    temp = tempfile.mkdtemp(prefix="rsfake-")  # short: Ray's socket paths live in it
    # RAY_TMPDIR: the nodes the autoscaler adds keep their files (and the cluster's address) there too
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_AUTH_MODE": "token", "RAY_TMPDIR": temp}
    # its own head (not the session's Ray), stopped by ending this `ray start --block`
    head = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "ray"), "start", "--head", "--block", f"--autoscaling-config={config}",
         "--num-cpus=0", f"--port={port}", f"--dashboard-port={dash}", f"--ray-client-server-port={_free_port()}",
         f"--dashboard-agent-listen-port={_free_port()}", "--disable-usage-stats"],
        env=env, stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT)
    driver = None
    try:
        s = Sweep("xdc", {"method.k": [4]}, data, labels, str(tmp_path / "results"), "autoscaled", base={"epochs": 1, "batch_size": 8, "method.rounds": 1})
        driver = subprocess.Popen([sys.executable, DRIVER, json.dumps(asdict(s)), "--address", address, "--autoscaler-config", str(config)],
                                  env=env, stdout=open(tmp_path / "driver.log", "w"), stderr=subprocess.STDOUT)
        seen: dict[str, dict] = {}
        deadline = time.time() + 600
        while driver.poll() is None and time.time() < deadline:
            try:
                seen.update({n["node_id"]: n["resources_total"] for n in _worker_nodes(f"http://127.0.0.1:{dash}")})
            except (OSError, ValueError, RayStateApiException):  # the head's dashboard is still starting
                pass
            time.sleep(1)
        out = (tmp_path / "driver.log").read_text()
        assert driver.poll() == 0 and "sweep finished: 1 trials" in out, out[-3000:]
        # the autoscaler brought up a node of cluster.yaml's CPU type on demand (the GPU type too
        # when CPU demand exceeded it: its max_workers is 1 here)
        assert {"CPU": 4.0} in [{k: v for k, v in r.items() if k in ("CPU", "GPU")} for r in seen.values()], seen
        deadline = time.time() + 120
        while _worker_nodes(f"http://127.0.0.1:{dash}") and time.time() < deadline:
            time.sleep(1)
        assert _worker_nodes(f"http://127.0.0.1:{dash}") == [], "the idle worker node was not removed"
    finally:
        if driver is not None:
            driver.kill()
            driver.wait()
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops every process it started ...
        head.wait(timeout=60)
        _kill_leftovers(temp)  # ... but not the nodes its autoscaler started
        shutil.rmtree(temp, ignore_errors=True)


def test_a_sweep_that_can_never_fit_fails_at_once(ray_session, small_prepared, tmp_path):
    data, labels = small_prepared
    config = tmp_path / "fake_cluster.json"
    config.write_text(json.dumps(fake_cluster_config()))

    def sweep(**base):
        return Sweep("xdc", {"method.k": [4, 8]}, data, labels, str(tmp_path), "fit", base=base)

    here = node_shapes()  # the session's one CPU-only node
    scalable = node_shapes(str(config))  # ... plus the node types the autoscaler may add
    assert {"CPU": 4.0, "GPU": 1.0} in scalable and {"CPU": 4.0, "GPU": 1.0} not in here
    check_fits(sweep(gpus_per_worker=1), scalable)  # a GPU node would come up for it
    with pytest.raises(ValueError, match=r"a train worker .* needs \{'CPU': 1.0, 'GPU': 1.0\}, more than any node has"):
        check_fits(sweep(gpus_per_worker=1), here)
    with pytest.raises(ValueError, match=r"the k-means task .* needs \{'CPU': 8.0, 'GPU': 0.0\}"):
        check_fits(sweep(**{"method.cluster_cpus": 8}), scalable)
    with pytest.raises(ValueError, match=r"its 2 train workers need \{'CPU': 2.5, 'GPU': 2.0\} at once"):
        check_fits(sweep(workers=2, gpus_per_worker=1), scalable)  # one GPU node at most
