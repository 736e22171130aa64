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
    """The results table, one line per trial and a few of set-up: no progress bars, no worker
    output, nothing from Tune's own banners ("Configuration for experiment", its TensorBoard
    hint) or the raylet's ("N PYTHON worker processes have been started"), which go to the
    log file named on stderr."""
    lines = xdc_sweep_job.logs.splitlines()  # the job's stdout and stderr
    table = [line for line in lines if line.startswith(("|", "### ", "(linear-probe top-1")) or not line.strip()]
    others = [line for line in lines if line not in table]
    assert len(table) >= 6 and len(others) <= 10, "\n".join(lines)
    for banner in ("Configuration for experiment", "tensorboard --logdir", "View detailed results here", "worker processes have been started"):
        assert banner not in xdc_sweep_job.logs, "\n".join(lines)
    assert not [line for line in lines if "WARNING" in line or "ERROR" in line], "\n".join(lines)
    assert sum("xdc_k_sweep [" in line and "done in" in line for line in lines) == 2, lines
    assert any(line.startswith("Ray worker logs: ") for line in lines), lines
    (log,) = [line.split(": ", 1)[1] for line in lines if line.startswith("Tune's and Ray's messages: ")]
    assert "Configuration for experiment" in open(log).read()  # kept, in the log


def test_tensorboard_has_one_entry_per_trial_named_by_its_settings(xdc_sweep_job):
    """The sweep's tensorboard/ (what `raysup dashboard` opens): one entry per trial, named by k,
    with the per-epoch curves, the final probe and the settings with final metrics as hparams."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = xdc_sweep_job.dir / "tensorboard"
    assert sorted(os.listdir(board)) == ["method.k=4", "method.k=8"]
    # TensorBoard over the whole sweep folder: a run per folder with event files; the trials' only
    # ones are those entries (no runs/<trial id>/tensorboard beside them; the cached supervised
    # baseline, a run of its own, keeps its folder)
    runs = {os.path.relpath(d, xdc_sweep_job.dir) for d, _, files in os.walk(xdc_sweep_job.dir) if any(".tfevents." in f for f in files)}
    assert {r for r in runs if not r.startswith("baselines")} == {"tensorboard/method.k=4", "tensorboard/method.k=8"}, runs
    for entry in os.listdir(board):
        events = EventAccumulator(str(board / entry))
        events.Reload()
        scalars = events.Tags()["scalars"]
        assert {"ray/tune/loss", "ray/tune/nmi_truth_video", "ray/tune/probe_video"} <= set(scalars), scalars
        assert [e.step for e in events.Scalars("ray/tune/loss")] == [1, 2]  # its one epoch, then the final report
        assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams"), entry


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
