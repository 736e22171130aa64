"""The experiment scripts' command line: each ``experiments/*.py`` declares an :class:`Experiment`
(the paper's study: method, grids, fixed settings) and calls :func:`main`."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

from raysup.config import parse_overrides
from raysup.data.ingest import PreparedData
from raysup.data.prepare import PrepareConfig, prepare
from raysup.data.storage import join, redact, resolve, write_json
from raysup.data.synthetic import SynthConfig, make_synthetic
from raysup.errors import ArgumentParser, log_path, report_errors
from raysup.runtime import init_ray
from raysup.sweep.driver import check_start, run_sweep
from raysup.sweep.results import baselines, write_table
from raysup.sweep.trials import Sweep


def default_dataset(root: str) -> tuple[str, str]:
    """(prepared folder, labels CSV) of the embedded synthetic dataset under ``root``
    (:func:`make_default_dataset` makes them)."""
    return os.path.join(root, "prepared"), os.path.join(root, "videos", "labels.csv")


def make_default_dataset(root: str) -> None:
    """Generate and prepare the embedded synthetic dataset under ``root`` once (reruns reuse it)."""
    videos, prepared = os.path.join(root, "videos"), os.path.join(root, "prepared")
    if not os.path.exists(os.path.join(videos, "synthetic.json")):
        make_synthetic(videos, SynthConfig(videos=120, seconds=4.0, size=48), workers=2)
    if not os.path.exists(os.path.join(prepared, "manifest.json")):
        prepare(os.path.join(videos, "videos"), prepared, PrepareConfig())


@dataclass(frozen=True)
class Experiment:
    """One of the papers' studies as a sweep: ``grid`` on the embedded dataset (tiny preset),
    ``paper_grid`` with ``--paper`` (paper preset). ``base`` overrides every trial's config,
    ``tiny_base`` too unless ``--paper``, ``quick_base`` too with ``--quick``; ``--set`` overrides
    them all. ``random_per``: one random-init baseline row per value of these grid keys
    (:func:`raysup.sweep.results.baselines`); ``supervised``: the supervised baseline row;
    ``probe_folds``: the probe's cross-validation folds on the embedded set (0: its test split);
    ``published``: the paper's numbers for the ``--paper`` table, {(grid values,) or (baseline
    name,): {"paper <dataset>": top-1 %}} (:func:`raysup.sweep.results.published_columns`);
    ``paper_rows``: ``--paper`` rows whose recipe differs in more than the grid key, ((grid
    values, overrides), ...), e.g. a baseline's own lr (a ``--set`` of the same key wins)."""

    method: str
    title: str
    name: str
    grid: dict[str, list]
    paper_grid: dict[str, list]
    base: dict[str, Any] = field(default_factory=dict)
    tiny_base: dict[str, Any] = field(default_factory=dict)
    quick_base: dict[str, Any] = field(default_factory=dict)
    probe_folds: int = 0
    random_per: tuple[str, ...] = ()
    supervised: bool = True
    published: dict[tuple, dict[str, float]] = field(default_factory=dict)
    paper_rows: tuple[tuple[dict[str, Any], dict[str, Any]], ...] = ()


def main(exp: Experiment, argv: list[str] | None = None) -> str:
    """Command line of every ``experiments/*.py`` sweep: with no arguments it runs ``exp.grid`` on
    the embedded dataset; ``--data/--labels`` run on real data, ``--paper`` the paper's grid and
    encoders, ``--address auto`` on a running cluster, ``--resume`` continues a killed sweep,
    ``--overwrite`` starts a sweep over. Errors are reported as ``raysup``'s
    (:func:`raysup.errors.report_errors`): a refused sweep or a bad argument prints one line on
    stderr and exits 2, any other error one line and exits 1, the traceback going to a log file
    (``--debug``: to stderr); nothing printed or logged holds a credential. Returns the table."""
    p = parser(exp)
    a = p.parse_args(argv)
    if a.data and not a.labels:
        p.error("--data needs --labels")
    if (a.eval_data or a.pretrain_labels or a.paper_epochs) and not a.paper:
        p.error("--eval-data, --pretrain-labels and --paper-epochs go with --paper")
    if "://" in a.storage and not a.data:
        p.error("a URI --storage needs --data and --labels (the embedded dataset is made on local disk)")
    table = []
    code = report_errors(p.prog, exp.name, lambda: table.append(_experiment(a, exp)), debug=a.debug)
    if code:
        raise SystemExit(code)
    return table[0]


def parser(exp: Experiment):
    """The experiment scripts' argument parser (:func:`main`)."""
    p = ArgumentParser(description=exp.title)
    p.add_argument("--data", help="prepared folder or URI (default: the embedded synthetic set)")
    p.add_argument("--labels", help="labels CSV for the probe (required with --data)")
    p.add_argument("--storage", default="results", help="where Tune writes (folder or s3:// URI)")
    p.add_argument("--paper", action="store_true", help="the paper's grid, encoders and schedule, evaluated by its paper protocol")
    p.add_argument("--eval-data", help="--paper: the downstream set's prepared folder or URI for the paper protocol (default: --data)")
    p.add_argument("--pretrain-labels", help="--paper: labels CSV of the pretraining set for the supervised baseline (Superv; default: --labels)")
    p.add_argument("--paper-epochs", type=int, help="--paper: the paper protocols' finetuning epochs (default: the papers'; a few for a smoke test)")
    p.add_argument("--address", help="Ray cluster address, e.g. auto")
    p.add_argument("--resume", action="store_true", help="continue a sweep whose driver was killed (same arguments)")
    p.add_argument("--overwrite", action="store_true", help="start over a sweep that already exists in --storage (deletes only what the sweep wrote; cached baselines stay)")
    p.add_argument("--max-concurrent", type=int, default=2, help="trials at once (2 keeps 2 cores busy)")
    p.add_argument("--workers", type=int, default=1, help="train workers per trial")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per train worker")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fixed override for every trial")
    p.add_argument("--no-supervised", action="store_true", help="skip the supervised baseline")
    p.add_argument("--probe-folds", type=int, help="probe by grouped N-fold cross-validation instead of the labels' test split")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (default: written to a log file)")
    p.add_argument("--quick", action="store_true", help="two grid points, one short round (smoke test)")
    return p


def _experiment(a, exp: Experiment) -> str:
    s = sweep_of(a, exp)
    dataset = None if a.data else (lambda: make_default_dataset(os.path.join(s.storage, "synthetic")))
    return run(s, exp.title, address=a.address, resume=a.resume, overwrite=a.overwrite, make_data=dataset)


def sweep_of(a, exp: Experiment) -> Sweep:
    """The sweep the parsed command line ``a`` asks of ``exp``."""
    name, chosen = exp.name, exp.paper_grid if a.paper else exp.grid
    storage = a.storage if "://" in a.storage else os.path.abspath(a.storage)
    data, labels = (a.data, a.labels) if a.data else default_dataset(os.path.join(storage, "synthetic"))
    fixed = {**exp.base, **({} if a.paper else exp.tiny_base), "workers": a.workers, "gpus_per_worker": a.gpus_per_worker}
    if a.quick:  # two points of the first key, the first value of the others
        chosen = {k: v[: 2 if i == 0 else 1] for i, (k, v) in enumerate(chosen.items())}
        fixed.update(exp.quick_base)
    user = parse_overrides(a.set)
    fixed.update(user)
    rows = tuple((match, {k: v for k, v in over.items() if k not in user}) for match, over in exp.paper_rows) if a.paper else ()
    return Sweep(
        exp.method, chosen, data, labels, storage, name, preset="paper" if a.paper else "tiny", base=fixed,
        max_concurrent=a.max_concurrent, probe_folds=a.probe_folds if a.probe_folds is not None else 0 if a.data else exp.probe_folds,
        supervised=exp.supervised and not (a.no_supervised or a.quick), random_per=exp.random_per,
        **({"protocol": "paper", "eval_data": a.eval_data or "", "pretrain_labels": a.pretrain_labels or "", "published": exp.published,
            "row_base": rows, "paper_epochs": a.paper_epochs or 0} if a.paper else {}),
    )


def run(s: Sweep, title: str, *, address: str | None = None, resume: bool = False, overwrite: bool = False,
        make_data: Callable[[], None] | None = None) -> str:
    """Run ``s`` (refused first as :func:`check_start` says), its baselines as a Ray task beside
    the last wave of trials, then write the table and plot (:func:`write_table`) and
    ``timing.json``; prints and returns the table. ``make_data`` makes the data once Ray is up.
    stdout gets the table and where it is, nothing else: what Tune, Ray and libraries print on
    it meanwhile goes to a log file (:func:`raysup.errors.log_path`) named on stderr."""
    check_start(s, resume=resume, overwrite=overwrite)  # before any work
    if make_data is None:  # a wrong --data is one line, before Ray or the log file
        PreparedData(s.data).manifest  # noqa: B018 - read to refuse a missing one
    # stdout is the table's: what Tune (its "Configuration for experiment" box, a TensorBoard
    # hint), the raylet ("N PYTHON worker processes have been started") and libraries print there
    # while the sweep runs goes to a log file instead, and so does Tune's logging (its notes on
    # syncing and slow callbacks); the sweep's own lines stay on stderr
    log = log_path(f"sweep-{s.name}")
    print(f"Tune's and Ray's messages: {log}", file=sys.stderr, flush=True)
    joins = not ray.is_initialized()  # this call starts or joins Ray (a script or a job; not a caller's session)
    with open(log, "a") as f, contextlib.redirect_stdout(f), logged_to(f, "ray.tune"):
        md = _run(s, title, address, resume, overwrite, make_data)
        if joins:  # leave Ray here: the raylet's late warnings (workers winding down) reach the log, not the table's stdout
            ray.shutdown()
    print(md)
    where = redact(join(s.storage, s.name))
    print(f"Tune results, results.csv/.md/.png: {where}  (raysup dashboard {where})")
    return md


@contextlib.contextmanager
def logged_to(stream, *names: str):
    """While the block runs, the records of the loggers ``names`` go to ``stream`` only."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s -- %(message)s"))
    loggers = [logging.getLogger(n) for n in names]
    before = [lg.propagate for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.propagate = False
    try:
        yield
    finally:
        for lg, propagate in zip(loggers, before):
            lg.removeHandler(handler)
            lg.propagate = propagate


def _run(s: Sweep, title: str, address: str | None, resume: bool, overwrite: bool, make_data: Callable[[], None] | None) -> str:
    import ray

    clock = {"start": time.perf_counter()}  # wall time by stage: <storage>/<name>/timing.json (experiments/bench/sweep.py)
    init_ray(address)
    if make_data is not None:
        make_data()
    clock["data"] = time.perf_counter()
    # the baselines train and probe as a Ray task beside the sweep's last wave of trials
    base_task = []

    def start_baselines() -> None:
        clock["baselines_start"] = time.perf_counter()
        base_task.append(ray.remote(num_cpus=s.trial_cpus)(baselines).remote(s))

    grid_result = run_sweep(s, resume=resume, overwrite=overwrite, on_last_wave=start_baselines)
    clock["sweep"] = time.perf_counter()
    if not base_task:  # the sweep never signalled its last wave
        start_baselines()
    base_acc = ray.get(base_task[0])
    clock["baselines"] = time.perf_counter()
    md = write_table(s, grid_result, base_acc, title)
    clock["table"] = time.perf_counter()
    fs, root = resolve(s.storage)
    write_json(fs, f"{root}/{s.name}/timing.json", {
        "data_s": clock["data"] - clock["start"], "sweep_s": clock["sweep"] - clock["data"],
        "baselines_wait_s": clock["baselines"] - clock["sweep"], "baselines_s": clock["baselines"] - clock["baselines_start"],
        "table_s": clock["table"] - clock["baselines"], "total_s": clock["table"] - clock["start"], "max_concurrent": s.max_concurrent,
    })
    return md
