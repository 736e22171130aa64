"""Progress of long work (raysup.progress): one live line on a terminal (a real pty), a line per
~10% off one; a prepare of the real footage files shows both (slow: a `raysup prepare` process)."""
from __future__ import annotations

import io
import os
import pty
import subprocess
import sys

import pyarrow.fs as pafs
import pytest

from raysup.progress import Progress, epoch_ticks, following


def _read_all(fd: int) -> str:
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the other end closed (Linux: EIO)
            break
        if not chunk:
            break
        out += chunk
    return out.decode(errors="replace")


def test_off_a_terminal_a_line_per_tenth():
    stream = io.StringIO()
    with Progress("prepare", 1000, "videos", stream=stream) as p:
        for _ in range(1000):
            p.update()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10 and lines[0].startswith("prepare: 100/1000 videos (10%), "), lines
    assert lines[-1].startswith("prepare: 1000/1000 videos (100%), ") and " in 0:00:0" in lines[-1], lines
    assert "left" in lines[4]  # done/total, rate, time left


def test_on_a_terminal_one_live_line():
    master, slave = pty.openpty()
    with open(slave, "w") as tty, Progress("prepare", 50, "videos", stream=tty) as p:
        for _ in range(50):
            p.update()
    shown = _read_all(master)
    os.close(master)
    assert "prepare:" in shown and "50/50" in shown and "\r" in shown and shown.count("\n") <= 1, repr(shown)


def test_training_progress_follows_the_workers_file(tmp_path):
    """The driver shows what rank 0 writes at each ~10% of an epoch: here two epochs of 100 steps."""
    fs, path, stream = pafs.LocalFileSystem(), str(tmp_path / "progress.json"), io.StringIO()
    with following(fs, path, "t1", "train round_0", stream=stream, every_s=0.01):
        for epoch in range(2):
            tick = epoch_ticks(fs, path, "t1", epoch, 2, 100)
            for step in range(1, 101):
                tick(step)
                if step % 10 == 0:
                    import time

                    time.sleep(0.03)
    lines = stream.getvalue().splitlines()
    assert 5 <= len(lines) <= 10 and lines[-1].startswith("train round_0: 200/200 steps (100%)"), lines
    assert epoch_ticks(None, path, "t1", 0, 2, 100)(50) is None  # the other workers write nothing


@pytest.mark.slow  # ~30 s: two `raysup prepare` processes (imports, joining Ray, decoding 3 real videos)
def test_a_prepare_of_real_footage_shows_its_progress(ray_session, real_videos, tmp_path):
    address = ray_session.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "raysup", "prepare", real_videos, "", "--videos-per-shard", "1", "--address", address]
    # on a terminal (stderr a pty): one line, redrawn as videos finish
    master, slave = pty.openpty()
    proc = subprocess.Popen([*cmd[:5], str(tmp_path / "tty"), *cmd[6:]], stderr=slave, stdout=subprocess.PIPE)
    os.close(slave)
    shown = _read_all(master)
    os.close(master)
    assert proc.wait(timeout=300) == 0, shown
    assert "prepare:" in shown and "3/3" in shown and "\r" in shown, shown
    # piped: a line per ~10% (here a line per video), far under 15
    piped = subprocess.run([*cmd[:5], str(tmp_path / "piped"), *cmd[6:]], capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0, piped.stderr
    lines = [line for line in piped.stderr.splitlines() if line.startswith("prepare: ")]
    assert 1 <= len(lines) <= 15 and lines[-1].startswith("prepare: 3/3 videos (100%)"), piped.stderr


def test_ray_datasets_show_their_progress(ray_session):
    """Work run as Ray Datasets (features, k-means passes, probe features) shows the same
    progress, counted by Ray Data as it executes: off a terminal a line per ~10% of each
    execution's tasks (or rows), the second execution in the block named as such; on a terminal
    one live line."""
    import ray
    from ray.data import DataContext

    from raysup.progress import DatasetProgress, dataset_progress

    def made(n: int, blocks: int):
        return ray.data.from_items([{"i": i} for i in range(n)], override_num_blocks=blocks).map_batches(lambda b: b, batch_size=None)

    def run(n: int, blocks: int) -> None:
        made(n, blocks).materialize()

    stream, first_pass = io.StringIO(), made(40, 10)  # a dataset made before the block shows its progress too
    with dataset_progress("cluster", "parts", tasks=True, stream=stream):
        first_pass.materialize()
        run(4, 2)
    lines = stream.getvalue().splitlines()
    first, second = [x for x in lines if x.startswith("cluster: ")], [x for x in lines if x.startswith("cluster (pass 2): ")]
    assert len(first) + len(second) == len(lines) and 1 <= len(first) <= 10 and 1 <= len(second) <= 10, lines
    assert first[-1].startswith("cluster: 10/10 parts (100%)") and second[-1].startswith("cluster (pass 2): 2/2 parts (100%)"), lines
    assert DatasetProgress not in DataContext.get_current().execution_callback_classes  # only while the block runs
    master, slave = pty.openpty()
    with open(slave, "w") as tty, dataset_progress("features", "clips", stream=tty):
        run(8, 2)
    shown = _read_all(master)
    os.close(master)
    assert "features:" in shown and "8/8" in shown and shown.count("\n") <= 1, repr(shown)
