"""Progress of long work (prepare, training epochs, features, k-means, probes) on stderr.

On a terminal, one live line (tqdm's: done/total, rate, time left) that updates in place; when
stderr is not a terminal (CI, ``ray job`` logs, a trial's log), one line each time another
~10% is done, so a 10-hour prepare writes about ten lines, never thousands. Work that runs as a
Ray Dataset in this process (features, k-means passes, probe features) shows the same, counted
by Ray Data as it executes (:func:`dataset_progress`). Training runs in Ray Train's workers: rank 0
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
from ray.data._internal.execution.execution_callback import ExecutionCallback

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

    def set_total(self, total: int) -> None:
        """A corrected ``total`` (an estimate that firmed up)."""
        if total != self.total:
            self.total = total
            if self.bar is not None:
                self.bar.total = total
                self.bar.refresh()

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


CALLBACKS_VAR = "RAY_DATA_EXECUTION_CALLBACKS"  # Ray Data's: execution callback classes, by import path
# the innermost dataset_progress block's [what, unit, stream, tasks, executions so far]; None outside one
_FOLLOWED: list | None = None


class DatasetProgress(ExecutionCallback):
    """Ray Data calls this (registered by :func:`dataset_progress`) as it executes a dataset in
    this process: it shows a :class:`Progress` of the rows (or, counting ``tasks``, the tasks)
    that the first operator after the inputs (a read, or a map over in-memory items; of two, as
    in a join, the larger) has finished, of Ray Data's estimate of its total (known once a first
    task has finished; it may be corrected as more do)."""

    def before_execution_starts(self, executor) -> None:
        self.shown = None
        if _FOLLOWED is not None:
            _FOLLOWED[4] += 1

    def on_execution_step(self, executor) -> None:
        if _FOLLOWED is None:
            return
        what, unit, stream, tasks, n = _FOLLOWED
        firsts = [op for op in executor._topology if op.input_dependencies and not any(d.input_dependencies for d in op.input_dependencies)]
        counts = [(op.num_outputs_total(), op.metrics.num_tasks_finished) if tasks else (op.num_output_rows_total(), op.metrics.rows_task_outputs_generated)
                  for op in firsts]  # Ray 2.60's operators: (estimated total, done)
        total, done = max(counts, key=lambda c: c[0] or 0, default=(None, 0))
        if not total:
            return
        if self.shown is None:
            self.shown = Progress(what if n < 2 else f"{what} (pass {n})", total, unit, stream=stream)
        self.shown.set_total(max(total, done))
        self.shown.update(done - self.shown.done)

    def after_execution_succeeds(self, executor) -> None:
        self.on_execution_step(executor)
        if self.shown is not None:
            self.shown.set_total(self.shown.done)  # all done: the estimate gives way to the count
            self.shown.update(0)
            self.shown.close()

    def after_execution_fails(self, executor, error: Exception) -> None:
        if self.shown is not None:
            self.shown.close()


@contextlib.contextmanager
def dataset_progress(what: str, unit: str, *, tasks: bool = False, stream: TextIO | None = None) -> Iterator[None]:
    """While the block (or the function it decorates) runs, each Ray Dataset this process
    executes shows its progress as a :class:`Progress` of ``what`` (``what (pass 2)`` for the
    second, …; :class:`DatasetProgress`): features, k-means passes, probe features. Registered
    through ``RAY_DATA_EXECUTION_CALLBACKS``, which Ray Data reads as it plans each execution (a
    dataset's own DataContext is a copy taken when it was made, maybe before the block)."""
    global _FOLLOWED
    before = _FOLLOWED, os.environ.get(CALLBACKS_VAR)
    _FOLLOWED = [what, unit, stream, tasks, 0]
    os.environ[CALLBACKS_VAR] = ",".join(filter(None, [before[1], f"{__name__}.{DatasetProgress.__name__}"]))
    try:
        yield
    finally:
        _FOLLOWED = before[0]
        if before[1] is None:
            del os.environ[CALLBACKS_VAR]
        else:
            os.environ[CALLBACKS_VAR] = before[1]


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
