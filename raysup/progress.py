"""Progress of long work (prepare, training epochs, features, k-means, probes) on stderr.

On a terminal, one live line (tqdm's: done/total, rate, time left) that updates in place; when
stderr is not a terminal (CI, ``ray job`` logs, a trial's log), one line each time another
~10% is done, so a 10-hour prepare writes about ten lines, never thousands. Work that runs as a
Ray Dataset in this process (features, k-means assignment, probe features) shows Ray Data's own
progress line on a terminal (:func:`ray_data_line`). Training runs in Ray Train's workers: rank 0
writes its progress to a small file at each ~10% of an epoch (:func:`epoch_ticks`), which the
process that called ``fit`` shows (:func:`following`).
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import pyarrow.fs as pafs

from raysup.data.storage import read_json, write_json


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 0


class Progress:
    """``what``: ``done``/``total`` ``unit``; :meth:`update` as work ends (see the module)."""

    def __init__(self, what: str, total: int, unit: str, *, stream: TextIO | None = None):
        from tqdm import tqdm

        self.what, self.total, self.unit, self.done, self.tenths = what, total, unit, 0, 0
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        live = self.stream.isatty() and total > 0
        # tqdm draws nothing on a terminal that reports no size (a new pty): 80×24 there
        size = {} if _columns(self.stream) else {"ncols": 80, "nrows": 24}
        self.bar = tqdm(total=total, desc=what, unit=f" {unit}", file=self.stream, leave=True, **size) if live else None

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        tenths = 10 * self.done // self.total if self.total > 0 else 0
        if tenths > self.tenths:  # another ~10% (several at once when the work moves in big steps)
            self.tenths = tenths
            print(self.line(), file=self.stream, flush=True)

    def line(self) -> str:
        """``prepare: 30/100 videos (30%), 2.1 videos/s, 0:00:33 left``."""
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = f", {_clock((self.total - self.done) / rate)} left" if rate > 0 and self.done < self.total else f" in {_clock(elapsed)}"
        return f"{self.what}: {self.done}/{self.total} {self.unit} ({100 * self.done // max(self.total, 1)}%), {rate:.3g} {self.unit}/s{left}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def ray_data_line() -> Iterator[None]:
    """Ray Data's own progress line (all operators together: rows done/total, rate, time left)
    for the datasets this process runs meanwhile, when stdout and stderr are terminals (Ray Data
    decides by stdout; off a terminal it would log a block every 10 s, so it stays off)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    before = ctx.enable_progress_bars, ctx.enable_operator_progress_bars
    if sys.stderr.isatty() and sys.stdout.isatty():
        ctx.enable_progress_bars, ctx.enable_operator_progress_bars = True, False
    try:
        yield
    finally:
        ctx.enable_progress_bars, ctx.enable_operator_progress_bars = before


def epoch_ticks(fs: pafs.FileSystem | None, path: str, token: str, epoch: int, epochs: int, steps: int) -> Callable[[int], None]:
    """A training worker's side of :func:`following` (``fs`` None: nothing, as on every worker
    but rank 0): a function of the steps done in ``epoch`` that writes ``{token, epoch, epochs,
    step, steps}`` to ``path`` on ``fs`` each time another ~10% of the epoch is done."""
    if fs is None or steps < 1:
        return lambda step: None
    tenths = [0]

    def tick(step: int) -> None:
        if 10 * step // steps > tenths[0]:
            tenths[0] = 10 * step // steps
            write_json(fs, path, {"token": token, "epoch": epoch, "epochs": epochs, "step": step, "steps": steps})

    return tick


def train_ticks(where: tuple[str, str] | None, epoch: int, epochs: int, steps: int) -> Callable[[int], None]:
    """:func:`epoch_ticks` of the calling Ray Train worker for ``where`` = (path, token) from
    ``fit``: rank 0 writes through the run's storage filesystem (Train's, which holds any
    credentials; the path carries none, as ``train_loop_config`` is shown by Ray's dashboard);
    the other workers, and Train's in-process local mode, write nothing."""
    import ray.train

    ctx = ray.train.get_context()
    try:
        fs = ctx.get_storage().storage_filesystem if where and ctx.get_world_rank() == 0 else None
    except NotImplementedError:  # local mode has no storage context
        fs = None
    return epoch_ticks(fs, *(where or ("", "")), epoch, epochs, steps)


@contextlib.contextmanager
def following(fs: pafs.FileSystem, path: str, token: str, what: str, *, stream: TextIO | None = None, every_s: float = 1.0) -> Iterator[None]:
    """The training driver's side of :func:`epoch_ticks`: while the block runs, a thread reads
    ``path`` every ``every_s`` and shows the fit's progress (this ``token``'s writes only): on a
    terminal one live line per epoch (steps done/total), off one a line per ~10% of all its
    epochs' steps."""
    stream = stream or sys.stderr
    stop = threading.Event()
    shown: dict[str, Any] = {"epoch": None, "bar": None}

    def show(state: dict) -> None:
        if stream.isatty():
            if state["epoch"] != shown["epoch"]:
                if shown["bar"] is not None:
                    shown["bar"].close()
                shown["epoch"] = state["epoch"]
                shown["bar"] = Progress(f"{what} epoch {state['epoch'] + 1}/{state['epochs']}", state["steps"], "steps", stream=stream)
            done = state["step"]
        else:
            if shown["bar"] is None:
                shown["bar"] = Progress(what, state["epochs"] * state["steps"], "steps", stream=stream)
            done = state["epoch"] * state["steps"] + state["step"]
        shown["bar"].update(max(0, done - shown["bar"].done))

    def poll() -> None:
        try:
            state = read_json(fs, path)
        except (OSError, ValueError):  # not written yet, or being replaced
            return
        if state.get("token") == token:
            show(state)

    def watch() -> None:
        while not stop.wait(every_s):
            poll()

    thread = threading.Thread(target=watch, name="raysup-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        poll()  # where the fit ended (a short one may end between two reads)
        if shown["bar"] is not None:
            shown["bar"].close()
