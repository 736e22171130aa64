"""cluster.yaml passes Ray's own schema validation (what `ray up` checks first, offline) and
holds what the README promises: a CPU-only head, GPU and CPU worker types scaling from zero,
raysup installed from the mounted checkout, nothing but SSH exposed, shapes that the
experiments' paper sweeps fit, and least privilege (issue 15 item 16): the one-time AWS setup
documented in its comments runs (against a recording stand-in for the AWS CLI: there is no AWS
here) and gives workers one bucket and nothing else, the head the autoscaler's EC2 access plus
handing out the worker role, and SSH only from the SSH_CIDR setting."""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess

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
    # nothing but SSH is opened: every node in the setup's group (Ray creates none, so none
    # with SSH open to every address), no extra rules, the dashboard on localhost only
    assert "security_group" not in cfg["provider"]
    groups = [t["node_config"]["SecurityGroupIds"] for t in types.values()]
    assert groups[0] and all(g == groups[0] for g in groups)
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


def run_setup(calls: str, ssh_cidr: str | None = None) -> list[list[str]]:
    """The setup block of cluster.yaml's comments run by bash (``set -eu``) with ``aws`` replaced
    by a function that records each call's arguments in the file ``calls``; ``ssh_cidr``
    replaces the SSH_CIDR setting."""
    with open(PATH) as f:
        text = f.read()
    block = text.split("# --- setup: begin\n")[1].split("# --- setup: end")[0]
    script = "".join(line[4:] + "\n" for line in block.splitlines())  # without the leading "#   "
    if ssh_cidr:
        script = re.sub(r"^SSH_CIDR=\S+", f"SSH_CIDR={ssh_cidr}", script, flags=re.M)
    stub = """aws() {
        for a in "$@"; do printf '%s\\037' "$a"; done >> "$CALLS"; printf '\\036' >> "$CALLS"
        case "$1 $2" in "sts get-caller-identity") echo 123456789012;; "ec2 describe-vpcs") echo vpc-1;;
                        "ec2 create-security-group") echo sg-1;; esac
    }
    """
    subprocess.run(["bash", "-c", "set -eu\n" + stub + script], env={"PATH": os.environ["PATH"], "CALLS": calls},
                   check=True, capture_output=True)
    with open(calls) as f:
        return [c.split("\x1f")[:-1] for c in f.read().split("\x1e")[:-1]]


def _opt(call: list[str], name: str) -> str:
    return call[call.index(name) + 1]


def test_workers_get_one_bucket_and_the_head_what_the_autoscaler_needs(cfg, tmp_path):
    calls = run_setup(str(tmp_path / "calls"))
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]["node_config"]["IamInstanceProfile"]["Name"]
    workers = {t["node_config"]["IamInstanceProfile"]["Name"] for n, t in types.items() if n != cfg["head_node_type"]}
    assert workers == {"raysup-worker"} and head == "raysup-head"  # neither is Ray's default (EC2 and S3 full access)
    profiles = {_opt(c, "--instance-profile-name"): _opt(c, "--role-name") for c in calls if c[1] == "add-role-to-instance-profile"}
    assert profiles == {"raysup-worker": "raysup-worker", "raysup-head": "raysup-head"}

    def grants(role: str) -> tuple[list[dict], list[str]]:
        """(statements of the role's inline policies, managed policies attached to it)"""
        mine = [c for c in calls if "--role-name" in c and _opt(c, "--role-name") == role]
        (trust,) = [json.loads(_opt(c, "--assume-role-policy-document")) for c in mine if c[1] == "create-role"]
        assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
        inline = [s for c in mine if c[1] == "put-role-policy" for s in json.loads(_opt(c, "--policy-document"))["Statement"]]
        return inline, [_opt(c, "--policy-arn") for c in mine if c[1] == "attach-role-policy"]

    bucket = {"arn:aws:s3:::my-raysup-bucket", "arn:aws:s3:::my-raysup-bucket/*"}
    inline, managed = grants("raysup-worker")
    assert managed == [] and inline
    for st in inline:  # objects of the one bucket: read, write, list; nothing else
        assert st["Effect"] == "Allow" and {st["Resource"]} <= bucket, st
        assert all(a.startswith("s3:") and "*" not in a for a in st["Action"]), st
    actions = {a for st in inline for a in st["Action"]}
    assert {"s3:ListBucket", "s3:GetObject", "s3:PutObject"} <= actions

    inline, managed = grants("raysup-head")
    assert managed == ["arn:aws:iam::aws:policy/AmazonEC2FullAccess"]  # the autoscaler launches and stops instances
    (passes,) = [st for st in inline if st["Action"] == "iam:PassRole"]
    assert passes["Resource"] == "arn:aws:iam::123456789012:role/raysup-worker"  # only the worker role, only to EC2
    assert passes["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    assert all({st["Resource"]} <= bucket for st in inline if st is not passes)  # drivers on the head: the same bucket


def test_ssh_source_range_is_a_setting(tmp_path):
    with open(PATH) as f:
        assert "0.0.0.0/0" not in f.read()
    for i, cidr in enumerate([None, "198.51.100.0/24"]):
        calls = run_setup(str(tmp_path / f"calls{i}"), cidr)
        ingress = [c for c in calls if c[1] == "authorize-security-group-ingress"]
        (ssh,) = [c for c in ingress if "--port" in c]
        assert _opt(ssh, "--port") == "22" and _opt(ssh, "--cidr") == (cidr or "203.0.113.7/32")
        others = [c for c in ingress if c is not ssh]  # all traffic, but only from the group's own nodes
        assert [(_opt(c, "--group-id"), _opt(c, "--source-group")) for c in others] == [("sg-1", "sg-1")]
