"""One writer at a time per output: ``raysup prepare`` per prepared folder, ``raysup train`` per
run folder. A lock is a small JSON file created only if absent (atomically on S3 where the server
supports conditional writes: :func:`raysup.data.storage.create_exclusive`) that names its holder
(pid, host, a token) and is rewritten every ``HEARTBEAT_S``; a lock whose process is gone (same
host) or whose heartbeat is older than ``STALE_S`` is broken with a message on stderr, and a live
one refuses the second writer in one line (FileExistsError)."""
from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
import uuid

import pyarrow.fs as pafs

from raysup.data.storage import create_exclusive, read_json, redact, resolve, write_json

HEARTBEAT_S = 10.0  # the lock holder rewrites the lock this often
STALE_S = 60.0  # a lock not rewritten for this long belongs to a run that died


class Lock:
    """The lock file ``path`` of the output ``label`` (what the user named it, credentials
    removed), taken by ``command`` (``prepare``, ``train``): a context manager; ``token`` tells
    this holder's writes from another's."""

    def __init__(self, fs: pafs.FileSystem, path: str, label: str, *, command: str, elsewhere: str):
        self.fs, self.path, self.label, self.command, self.elsewhere = fs, path, label, command, elsewhere
        self.token = uuid.uuid4().hex
        self.me = {"pid": os.getpid(), "host": socket.gethostname(), "token": self.token}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._heartbeat, daemon=True)

    def __enter__(self) -> Lock:
        self.fs.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
        for _ in range(3):
            if create_exclusive(self.fs, self.path, self._stamp()) and self.mine():
                self.thread.start()
                return self
            holder, why = self.check()
            if holder:
                print(f"raysup {self.command}: breaking the stale lock of {self.label} held by pid {holder['pid']} on {holder['host']} ({why})", file=sys.stderr)
                with contextlib.suppress(FileNotFoundError, OSError):
                    self.fs.delete_file(self.path)
        raise FileExistsError(f"{self.label}: could not take the lock {self.path.rsplit('/', 1)[1]} (another {self.command} keeps taking it)")

    def check(self) -> tuple[dict | None, str]:
        """(holder, why it is dead) of a dead holder's lock, (None, "") if there is none; a live
        holder is the one-line FileExistsError (cheap: callers may ask before starting Ray)."""
        holder = self.holder()
        why = holder and stale(holder)
        if holder and not why:
            age = time.time() - holder["heartbeat"]
            raise FileExistsError(f"{self.label} is being {'prepared' if self.command == 'prepare' else 'trained'} by pid {holder['pid']} on "
                                  f"{holder['host']} (heartbeat {age:.0f} s ago); wait for it to finish or use another {self.elsewhere}")
        return (holder, why) if holder else (None, "")

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()
        if self.mine():
            self.fs.delete_file(self.path)

    def holder(self) -> dict | None:
        """The lock's content (None: no lock, or one being written)."""
        return read_holder(self.fs, self.path)

    def mine(self) -> bool:
        return (self.holder() or {}).get("token") == self.token

    def _stamp(self) -> dict:
        return {**self.me, "heartbeat": time.time()}

    def _heartbeat(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            if self.mine():
                write_json(self.fs, self.path, self._stamp())


def read_holder(fs: pafs.FileSystem, path: str) -> dict | None:
    """The content of the lock file ``path`` (None: no lock, or one being written)."""
    try:
        return read_json(fs, path)
    except (FileNotFoundError, ValueError):  # gone, or being written
        return None


def stale(holder: dict) -> str:
    """Why a lock's holder is dead ("" if it may be alive)."""
    if holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", 0))):
        return "that process no longer exists"
    age = time.time() - float(holder.get("heartbeat", 0))
    return f"no heartbeat for {age:.0f} s" if age > STALE_S else ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


RUN_LOCK = "lock.json"


def RunLock(run_dir: str) -> Lock:  # noqa: N802  (a constructor by name)
    """One ``raysup train`` at a time per run folder: ``run_dir/lock.json``."""
    fs, root = resolve(run_dir)
    return Lock(fs, f"{root}/{RUN_LOCK}", redact(run_dir), command="train", elsewhere="--out")
