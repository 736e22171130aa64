"""One ``raysup train`` at a time per run folder (``prepare`` has its own lock on its output:
:class:`raysup.data.prepare.OutputLock`; both share its create-if-absent and staleness rules)."""
from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
import uuid

from raysup.data.prepare import HEARTBEAT_S, _stale
from raysup.data.storage import create_exclusive, read_json, redact, resolve, write_json

RUN_LOCK = "lock.json"


class RunLock:
    """``run_dir/lock.json`` names the run training there (pid, host) and is rewritten every
    ``HEARTBEAT_S``. A lock whose process is gone (same host) or whose heartbeat is older than
    ``STALE_S`` is broken, with a message on stderr; a live one refuses the second run in one
    line (FileExistsError). The lock file is removed on exit."""

    def __init__(self, run_dir: str):
        self.fs, self.root = resolve(run_dir)
        self.path, self.label = f"{self.root}/{RUN_LOCK}", redact(run_dir)
        self.me = {"pid": os.getpid(), "host": socket.gethostname(), "token": uuid.uuid4().hex}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._heartbeat, daemon=True)

    def __enter__(self) -> RunLock:
        self.fs.create_dir(self.root, recursive=True)
        for _ in range(3):
            if create_exclusive(self.fs, self.path, self._stamp()) and self._mine():
                self.thread.start()
                return self
            holder, why = self.check()
            if holder:
                print(f"raysup train: breaking the stale lock of {self.label} held by pid {holder['pid']} on {holder['host']} ({why})", file=sys.stderr)
                with contextlib.suppress(FileNotFoundError, OSError):
                    self.fs.delete_file(self.path)
        raise FileExistsError(f"{self.label}: could not take the lock {RUN_LOCK} (another train keeps taking it)")

    def check(self) -> tuple[dict | None, str]:
        """(holder, why it is dead) of a dead holder's lock, (None, "") if there is none; a live
        holder is the one-line FileExistsError (cheap: callers ask before starting Ray)."""
        holder = self._holder()
        why = holder and _stale(holder)
        if holder and not why:
            age = time.time() - holder["heartbeat"]
            raise FileExistsError(f"{self.label} is being trained by pid {holder['pid']} on {holder['host']} "
                                  f"(heartbeat {age:.0f} s ago); wait for it to finish or use another --out")
        return (holder, why) if holder else (None, "")

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()
        if self._mine():
            self.fs.delete_file(self.path)

    def _stamp(self) -> dict:
        return {**self.me, "heartbeat": time.time()}

    def _holder(self) -> dict | None:
        try:
            return read_json(self.fs, self.path)
        except (FileNotFoundError, ValueError):  # gone, or being written
            return None

    def _mine(self) -> bool:
        return (self._holder() or {}).get("token") == self.me["token"]

    def _heartbeat(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            if self._mine():
                write_json(self.fs, self.path, self._stamp())
