"""cluster.yaml passes Ray's own schema validation (what `ray up` checks first, offline) and
holds what the README promises: a CPU-only head, GPU and CPU worker types scaling from zero,
raysup installed from the mounted checkout, nothing but SSH exposed, and shapes that the
experiments' paper sweeps fit."""
from __future__ import annotations

import copy
import os

import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from raysup.sweep import Sweep, check_fits, node_shapes

PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cluster.yaml")


@pytest.fixture(scope="module")
def cfg() -> dict:
    with open(PATH) as f:
        return yaml.safe_load(f)


def test_passes_rays_schema_validation(cfg):
    validate_config(prepare_config(copy.deepcopy(cfg)))
    broken = copy.deepcopy(cfg)
    broken["available_node_types"]["gpu"]["min_worker"] = 0  # a typo must not pass
    with pytest.raises(Exception, match="min_worker"):
        validate_config(prepare_config(broken))


def test_node_types_storage_and_exposure(cfg):
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"] == {"CPU": 0}  # the head only coordinates
    gpu, cpu = types["gpu"], types["cpu"]
    assert gpu["min_workers"] == 0 and gpu["resources"]["GPU"] >= 1 and gpu["max_workers"] >= 1
    assert cpu["min_workers"] == 0 and "GPU" not in cpu["resources"] and cpu["max_workers"] >= 1
    assert 0 < cfg["idle_timeout_minutes"] <= 30
    major_minor = ".".join(ray.__version__.split(".")[:2])
    assert cfg["docker"]["image"].startswith(f"rayproject/ray:{major_minor}.")  # the pinned Ray
    (mount,) = [remote for remote, local in cfg["file_mounts"].items() if local == "."]
    assert any(f"pip install -q -e {mount}" in c for c in cfg["setup_commands"])  # pyproject's pins
    for t in (gpu, cpu):  # workers read and write s3:// with the cluster's instance role
        assert t["node_config"]["IamInstanceProfile"]
    # nothing but SSH is opened: no extra security group rules, the dashboard on localhost only
    assert "security_group" not in cfg["provider"]
    start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "0.0.0.0" not in start
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in start


def test_paper_sweeps_fit_its_node_types(ray_session, tmp_path):
    def sweep(**base):
        return Sweep("xdc", {"method.k": [64, 1024]}, "data", "labels.csv", str(tmp_path), "paper", preset="paper", base=base)

    shapes = node_shapes(PATH)
    check_fits(sweep(workers=4, gpus_per_worker=1, **{"method.cluster_cpus": 16}), shapes)
    with pytest.raises(ValueError, match="its 5 train workers need"):
        check_fits(sweep(workers=5, gpus_per_worker=1), shapes)  # 4 GPU nodes at most
    with pytest.raises(ValueError, match="a train worker .* more than any node has"):
        check_fits(sweep(gpus_per_worker=2), shapes)
