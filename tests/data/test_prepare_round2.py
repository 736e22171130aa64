"""prepare under the second round of attacks (issue 26): racing S3 locks, retried tasks, inputs
skipped earlier, failures inside tasks, absurd options, timestamp jumps back."""
from __future__ import annotations

import threading

import pyarrow.fs as pafs
import pytest

from raysup.cli import main
from raysup.data.prepare import OutputLock


def test_s3_lock_race_has_exactly_one_winner(s3_server):
    """Eight prepares take the lock of one S3 output in the same instant, three times over: the
    conditional PUT (If-None-Match) lets exactly one win each time (check-then-write let several)."""
    s3_server.make_bucket("race")
    fs, root = pafs.FileSystem.from_uri(s3_server.uri("race/out"))
    for attempt in range(3):
        barrier, won, locks = threading.Barrier(8), [], []

        def take(out, barrier=barrier, won=won, locks=locks):
            lock = OutputLock(fs, out, out)
            barrier.wait()
            try:
                locks.append(lock.__enter__())
                won.append(lock)
            except FileExistsError:
                pass

        threads = [threading.Thread(target=take, args=(f"{root}{attempt}",)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for lock in locks:
            lock.__exit__(None, None, None)
        assert len(won) == 1, f"attempt {attempt}: {len(won)} prepares took the lock"


@pytest.mark.parametrize("option, value, field", [("--cpus-per-task", "100", "cpus_per_task"), ("--audio-seconds", "1e6", "audio_seconds"),
                                                  ("--fps", "1e5", "fps"), ("--size", "100000", "size")])
def test_absurd_options_are_refused_in_one_line(ray_session, tmp_path, capsys, option, value, field):
    """--cpus-per-task above every node's CPUs waited for ever; --audio-seconds 1e6 allocated
    24e9 samples per clip. Each is refused before anything is written, naming the option."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.mp4").write_bytes(b"x")
    assert main(["prepare", str(src), str(tmp_path / "out"), option, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"raysup prepare: error: {field}: ") and "Traceback" not in err[0], err
    assert not (tmp_path / "out").exists()
