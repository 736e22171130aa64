"""The sweep scripts run end to end (``--quick``, on the 24-video set) on a real local Ray
cluster with Tune. The XDC sweep runs once, as a user would on a cluster (a Ray job; the
``xdc_sweep_job`` fixture in conftest.py, which tests/test_dashboard.py watches too): data and
results on a real S3 server with the keys in the URIs. Its results feed several checks: the
table and plot on S3, the stage breakdown, no secret in any object written or in anything
printed, a quiet terminal, and reruns refused in one line."""
from __future__ import annotations

import os
import runpy
import subprocess
import sys

import pandas as pd
import pyarrow.fs as pafs
import pytest

from raysup.data.storage import redact
from tests.s3server import SECRET_KEY

ROOT = os.path.join(os.path.dirname(__file__), "..")
XDC = os.path.join(ROOT, "experiments", "xdc_k_sweep.py")


def _run(argv: list[str], address: str, aws_env: dict[str, str]) -> subprocess.CompletedProcess:
    """The script as a user reruns it the documented way: the keys in the AWS variables, not in the URIs."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **aws_env}
    argv = [redact(a) for a in argv]
    return subprocess.run([sys.executable, XDC, *argv, "--address", address], env=env, capture_output=True, text=True, timeout=900)


def test_xdc_k_sweep_quick_writes_its_table_to_s3(xdc_sweep_job):
    out_dir = xdc_sweep_job.dir
    table = pd.read_csv(out_dir / "results.csv")
    assert table["method.k"].astype(str).tolist() == ["4", "8", "random init"]
    assert table[["video", "audio"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (out_dir / "results.png").stat().st_size > 1000 and (out_dir / "results.md").exists()
    assert "XDC: number of clusters k" in xdc_sweep_job.logs
    # Tune's own results (progress.csv, TensorBoard events) are there for the dashboard
    assert any(f.startswith("events.out.tfevents") for _, _, fs in os.walk(out_dir) for f in fs)
    # the stage-5 benchmark's breakdown of this sweep's wall time (experiments/bench/sweep.py)
    rows = runpy.run_path(os.path.join(ROOT, "experiments", "bench", "sweep.py"))["breakdown"](str(out_dir))
    trials, share = rows[:-1], rows[-1]
    assert len(trials) == 2 and share["goal"].startswith("next bottleneck"), rows
    for r in trials:
        assert r["features s"] > 0 and r["k-means s"] > 0 and r["train steps s"] > 0 and r["probe s"] > 0, r
        assert r["trial total s"] > r["features s"] + r["k-means s"] + r["train steps s"] + r["probe s"], r


def test_no_secret_is_written_or_printed(xdc_sweep_job):
    secret = SECRET_KEY.encode()
    files = [f for f in xdc_sweep_job.fs.get_file_info(pafs.FileSelector(xdc_sweep_job.results, recursive=True)) if f.type == pafs.FileType.File]
    names = {os.path.basename(f.path) for f in files}
    assert {"tuner.pkl", "params.json", "params.pkl", "result.json", "sweep.json", "results.csv", "timing.json"} <= names, names
    for f in files:
        with xdc_sweep_job.fs.open_input_stream(f.path) as stream:
            content = stream.read()
        # pickles hold it as is; Tune's experiment state holds pickles hex-encoded
        assert secret not in content and secret.hex().encode() not in content, f.path
    assert SECRET_KEY not in xdc_sweep_job.logs


def test_the_terminal_stays_quiet(xdc_sweep_job):
    """One line per trial, a few of set-up and the final table: no progress bars, no worker output."""
    lines = xdc_sweep_job.logs.splitlines()  # the job's stdout and stderr
    assert len(lines) < 40, "\n".join(lines)
    # e.g. results Tune could not read back; the raylet's note that it started more worker
    # processes at once than the machine has cores (the job's own driver and workers on a
    # 2-core test cluster) is Ray's remark on the machine, not on the sweep
    warnings = [line for line in lines if ("WARNING" in line or "ERROR" in line) and "worker processes have been started" not in line]
    assert not warnings, "\n".join(lines)
    assert sum("xdc_k_sweep [" in line and "done in" in line for line in lines) == 2, lines
    assert any(line.startswith("Ray worker logs: ") for line in lines), lines


def test_a_finished_sweep_is_not_overwritten_nor_resumed_with_other_arguments(xdc_sweep_job, s3_server):
    def results() -> bytes:
        with xdc_sweep_job.fs.open_input_stream(f"{xdc_sweep_job.results}/results.csv") as f:
            return f.read()

    before = results()
    rerun = _run(xdc_sweep_job.argv, xdc_sweep_job.address, s3_server.env)
    assert rerun.returncode == 2 and len(rerun.stderr.splitlines()) == 1, rerun.stderr
    assert "already holds a finished sweep" in rerun.stderr and "--resume" in rerun.stderr and "--overwrite" in rerun.stderr
    changed = _run([*xdc_sweep_job.argv, "--resume", "--set", "batch_size=4"], xdc_sweep_job.address, s3_server.env)
    assert changed.returncode == 2 and len(changed.stderr.splitlines()) == 1, changed.stderr
    assert "other arguments" in changed.stderr and "base:" in changed.stderr and "'batch_size'" in changed.stderr
    assert SECRET_KEY not in rerun.stderr + changed.stderr
    assert results() == before


@pytest.mark.slow  # ~85 s; the sweep machinery runs in the XDC tests above, GDT training in test_method_contract
def test_gdt_specaugment_sweep_quick(small_prepared, tmp_path, monkeypatch, capsys):
    """A two-key grid: --quick keeps two SpecAugment settings at sync=True."""
    data, labels = small_prepared
    argv = ["gdt_specaugment_sweep.py", "--quick", "--data", data, "--labels", labels, "--storage", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(os.path.join(ROOT, "experiments", "gdt_specaugment_sweep.py"), run_name="__main__")
    table = pd.read_csv(tmp_path / "gdt_specaugment_sweep" / "results.csv")
    assert table["method.specaugment"].tolist() == ["mild", "none", "random init"]
    assert table["method.sync"].tolist()[:2] == [True, True]
    assert table[["video", "audio"]].apply(lambda c: c.between(0, 1)).all().all()
    assert "GDT: SpecAugment x sync/async" in capsys.readouterr().out
