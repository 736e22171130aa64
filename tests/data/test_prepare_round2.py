"""prepare under the second round of attacks (issue 26): racing S3 locks, retried tasks, inputs
skipped earlier, failures inside tasks, absurd options, timestamp jumps back."""
from __future__ import annotations

import threading

import pyarrow.fs as pafs

from raysup.data.prepare import OutputLock


def test_s3_lock_race_has_exactly_one_winner(s3_server):
    """Eight prepares take the lock of one S3 output in the same instant, three times over: the
    conditional PUT (If-None-Match) lets exactly one win each time (check-then-write let several)."""
    s3_server.make_bucket("race")
    fs, root = pafs.FileSystem.from_uri(s3_server.uri("race/out"))
    for attempt in range(3):
        barrier, won, locks = threading.Barrier(8), [], []

        def take(i, out=f"{root}{attempt}"):
            lock = OutputLock(fs, out, out)
            barrier.wait()
            try:
                locks.append(lock.__enter__())
                won.append(i)
            except FileExistsError:
                pass

        threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for lock in locks:
            lock.__exit__(None, None, None)
        assert len(won) == 1, f"attempt {attempt}: {len(won)} prepares took the lock"
