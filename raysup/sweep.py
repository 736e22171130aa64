"""Ray Tune sweeps of the papers' ablations (the only ``ray.tune`` import).

Each trial is a Tune function trainable that trains one config with :func:`raysup.runner.train`
(TorchTrainer(s) reporting to Tune through ``TuneReportCallback``), then reports
the linear-probe top-1 of every encoder as ``probe_<encoder>``. Results become a table
(CSV, Markdown) and a plot next to Tune's own results, on the same storage (folder or URI).

A sweep's folder ``<storage>/<name>/`` records its arguments (``sweep.json``): a rerun without
``resume`` refuses to replace it (unless ``overwrite``), and a resume with other arguments is
refused, naming them. Credentials in URIs never reach what Tune writes: trials get the
:class:`Sweep` through ``tune.with_parameters`` (Ray's object store), Tune's filesystem pickles
without keys, and everything recorded or printed goes through :func:`redact`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs
from ray import tune

from raysup import runner
from raysup.config import parse_overrides
from raysup.data.ingest import PreparedData
from raysup.data.prepare import PrepareConfig, prepare
from raysup.data.storage import exists, join, read_json, redact, resolve, write_json
from raysup.data.synthetic import SynthConfig, make_synthetic
from raysup.evaluate import cv_probe, probe
from raysup.methods import make_config
from raysup.resources import node_shapes, unfit
from raysup.runtime import init_ray


@dataclass(frozen=True)
class Sweep:
    method: str
    grid: dict[str, list]  # dotted config key → values; every combination is a trial
    data: str
    labels: str
    storage: str  # folder or URI; Tune writes <storage>/<name>/
    name: str
    preset: str = "tiny"
    base: dict[str, Any] = field(default_factory=dict)  # fixed overrides for every trial
    max_concurrent: int = 1
    trial_cpus: float = 0.5
    max_failures: int = 1
    probe_folds: int = 0  # 0: probe on the labels' test split; N: grouped N-fold CV (steadier on small sets)
    supervised: bool = False  # baselines: train and probe the supervised baseline too
    random_per: tuple[str, ...] = ()  # baselines: one random-init row per combination of these grid keys

    def points(self) -> list[dict[str, Any]]:
        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*(self.grid[k] for k in keys))]

    def record(self) -> dict[str, Any]:
        """What defines the sweep, as JSON (``sweep.json``): every field but where it is stored,
        URIs without credentials."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "storage"}
        return json.loads(json.dumps({**d, "data": redact(self.data), "labels": redact(self.labels)}))


def trial(point: dict[str, Any], s: Sweep) -> None:
    """Tune function trainable: train one grid point, then report its probe accuracies. Only the
    point is Tune's config (saved in params.json); the sweep comes by ``tune.with_parameters``."""
    from ray.tune.integration.ray_train import TuneReportCallback

    cfg = make_config(s.method, s.preset, {**s.base, **point})
    data = runner.open_data(s.data, cfg)
    run_dir = join(s.storage, s.name, "runs", tune.get_context().get_trial_id())
    t = time.perf_counter()
    runner.train(cfg, data, run_dir, labels=s.labels, resume=True, callbacks=[TuneReportCallback()])
    timing = {"time_run_s": time.perf_counter() - t}
    t = time.perf_counter()
    run = runner.open_run(run_dir)  # probed as trained (e.g. with the classes the labels gave)
    acc = objective(s, run.cfg, data, run.checkpoint)
    timing["time_probe_s"] = time.perf_counter() - t
    tune.report({**{f"probe_{k}": v for k, v in acc.items()}, **{f"param_{k}": v for k, v in point.items()}, **timing})


def objective(s: Sweep, cfg, data: PreparedData, checkpoint: str | None) -> dict[str, float]:
    """Linear-probe top-1 per encoder: on the labels' test split, or by ``s.probe_folds``-fold
    cross-validation (:func:`raysup.evaluate.cv_probe`); ``data`` read at ``cfg.crop_size``."""
    if s.probe_folds:
        return cv_probe(cfg, data, s.labels, checkpoint, folds=s.probe_folds)
    return probe(cfg, data, s.labels, checkpoint)


def check_fits(s: Sweep, shapes: list[dict[str, float]]) -> None:
    """Raise ValueError, naming the request and the nodes, if some trial of ``s`` could never be
    scheduled on nodes of these ``shapes`` (it would wait forever): the trial itself, one train
    worker, the probe's feature extractor and the XDC k-means task must each fit on one node,
    and the trial with all its train workers must fit on all the nodes together."""
    for params in s.points():
        cfg = make_config(s.method, s.preset, {**s.base, **params})
        requests = {
            "the trial (trial_cpus)": {"CPU": s.trial_cpus},
            "a train worker (cpus_per_worker, gpus_per_worker)": {"CPU": cfg.cpus_per_worker, "GPU": cfg.gpus_per_worker},
            "the probe's feature extractor": {"CPU": 1.0},
            **runner.side_tasks(cfg),
        }
        together = {"CPU": s.trial_cpus + cfg.workers * cfg.cpus_per_worker, "GPU": cfg.workers * cfg.gpus_per_worker}
        why = unfit(requests, (f"the trial and its {cfg.workers} train workers", together), shapes)
        if why:
            raise ValueError(f"sweep {s.name!r}, point {params}: {why}")


def _autoscaling_coordinator_here() -> None:
    """Create Ray's detached ``AutoscalingCoordinator`` actor on the driver's node. Ray Data and
    Train (2.60) create it on the node that first needs it; when that is a trial's worker node,
    the actor keeps the node busy forever and the autoscaler never removes it."""
    from ray.data._internal.cluster_autoscaler import get_or_create_autoscaling_coordinator

    get_or_create_autoscaling_coordinator()


class OnLastWave(tune.Callback):
    """Calls ``start`` once, when the ``after``-th trial ends: with ``after`` = points − slots (≥ 1), as
    the sweep's last wave of trials starts. Whatever ``start`` launches (the baselines) then runs
    beside that wave, not beside the first trials (slowing all of them) nor after the last one
    (waves of equal trials end together, so waiting for an idle slot ran the baselines alone
    after the sweep: +2.5 min on the six-trial GDT sweep).

    Tune pickles its callbacks into the sweep's folder (tuner.pkl): ``start``, which holds the
    sweep's arguments, is left out, so a restored copy does nothing (a resumed sweep starts its
    baselines itself)."""

    def __init__(self, start: Callable[[], None] | None, after: int):
        self.start, self.after, self.ended = start, after, 0

    def __getstate__(self):
        return {**self.__dict__, "start": None}

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ended += 1
        if self.ended == self.after and self.start is not None:
            self.start()

    on_trial_error = on_trial_complete


class Progress(tune.Callback):
    """The sweep's progress view (Tune's own tables are off): one line on stderr per trial as it
    ends, fails or is retried."""

    def __init__(self, name: str, total: int):
        self.name, self.total, self.ended = name, total, 0

    def _say(self, trial, what: str) -> None:
        point = " ".join(f"{k}={v}" for k, v in trial.config.items())
        print(f"{self.name} [{self.ended}/{self.total}] {point}: {what}", file=sys.stderr, flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ended += 1
        r = trial.last_result or {}
        probes = ", ".join(f"{k[6:]} {100 * v:.1f}%" for k, v in r.items() if k.startswith("probe_"))
        self._say(trial, f"done in {r.get('time_total_s', 0) / 60:.1f} min, probe top-1 {probes}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._say(trial, f"failed, retrying (error.txt in {trial.path})")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.ended += 1
        self._say(trial, f"failed (error.txt in {trial.path})")


class _KeylessS3(pafs.S3FileSystem):
    """An S3 filesystem that pickles without its access keys: Tune pickles its storage
    filesystem into the sweep's folder (tuner.pkl, experiment_state). Unpickled elsewhere it
    takes keys from the environment; Tune's trial processes never use it (they report no
    checkpoints), and a restore passes this one again. Copies in this process (Tune
    deep-copies its experiment spec) are this object, keys included."""

    def __reduce__(self):
        rebuild, (kwargs,) = super().__reduce__()
        return rebuild, ({**kwargs, "access_key": None, "secret_key": None, "session_token": None},)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


def _tune_filesystem(fs: pafs.FileSystem) -> pafs.FileSystem:
    if isinstance(fs, pafs.S3FileSystem):
        return _KeylessS3(**fs.__reduce__()[1][0])
    return fs


def check_start(s: Sweep, *, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse, before any work, to start ``s`` where a sweep already is (unless ``resume``, which
    continues it, or ``overwrite``, which starts it over), and to resume a sweep recorded with
    other arguments, naming each difference."""
    if resume and overwrite:
        raise ValueError("--resume continues a sweep and --overwrite starts it over: pass one of them")
    fs, root = resolve(s.storage)
    path = f"{root}/{s.name}"
    where = redact(join(s.storage, s.name))
    if resume and exists(fs, f"{path}/sweep.json"):
        old, new = read_json(fs, f"{path}/sweep.json"), s.record()
        changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        if changed:
            raise ValueError(f"{where} was started with other arguments ({'; '.join(changed)}); resume it with the same ones, or pass --overwrite to start over")
    if not (resume or overwrite) and (exists(fs, f"{path}/sweep.json") or exists(fs, f"{path}/tuner.pkl")):
        state = "a finished sweep (results.csv)" if exists(fs, f"{path}/results.csv") else "a sweep"
        raise FileExistsError(f"{where} already holds {state}; pass --resume to continue it, --overwrite to start it over, or use another --storage")


# What a sweep writes in its folder, all that --overwrite deletes there: Tune's experiment state
# (tuner.pkl, experiment_state-<date>.json, basic-variant-state-<date>.json, its storage marker)
# and trial folders (<trainable>_<5 hex>_<5 digits>_<tag>_<date>), raysup's runs/, sweep.json,
# timing.json (and their temporary .tmp) and results.*. The cached baselines/ stay, and so does
# anything else (a user's notebook, figures).
_SWEEP_FILES = re.compile(r"(sweep|timing)\.json(\.tmp)?|results\.(csv|md|png)|tuner\.pkl|"
                          r"(experiment_state|basic-variant-state)-[0-9_-]+\.json|\.validate_storage_marker")
_SWEEP_DIRS = re.compile(rf"runs|{trial.__name__}_[0-9a-f]{{5}}_[0-9]{{5}}_.+")


def _clear(fs: pafs.FileSystem, path: str) -> None:
    """Delete what a sweep wrote in its folder ``path`` (see :data:`_SWEEP_FILES`), nothing else."""
    for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
        if info.type == pafs.FileType.Directory and _SWEEP_DIRS.fullmatch(info.base_name):
            fs.delete_dir(info.path)
        elif info.type == pafs.FileType.File and _SWEEP_FILES.fullmatch(info.base_name):
            fs.delete_file(info.path)


def run_sweep(s: Sweep, *, resume: bool = False, overwrite: bool = False, autoscaler_config: str | None = None,
              on_last_wave: Callable[[], None] | None = None) -> tune.ResultGrid:
    """Run the grid; with ``resume``, continue it (finished trials are not redone); with
    ``overwrite``, start it over (cached baselines stay). Refused as :func:`check_start` says; a
    sweep that could never be scheduled or whose configs the data cannot serve fails first
    (:func:`check_fits` against :func:`node_shapes`, each method's ``check``). ``on_last_wave`` is called once, as the last wave of trials starts (see
    :class:`OnLastWave`). Progress: one line per trial on stderr (:class:`Progress`)."""
    check_start(s, resume=resume, overwrite=overwrite)
    data = PreparedData(s.data)
    for point in s.points():  # a config the data cannot serve fails here, not in every trial
        runner.check(make_config(s.method, s.preset, {**s.base, **point}), data)
    check_fits(s, node_shapes(autoscaler_config))
    _autoscaling_coordinator_here()
    fs, root = resolve(s.storage)
    storage_fs = None if "://" not in s.storage else _tune_filesystem(fs)  # keeps a URI's endpoint
    path = f"{root}/{s.name}"
    trainable = tune.with_resources(tune.with_parameters(trial, s=s), {"CPU": s.trial_cpus})
    restoring = resume and tune.Tuner.can_restore(path, storage_filesystem=storage_fs)
    if overwrite:
        _clear(fs, path)
    if not restoring:
        fs.create_dir(path)
        write_json(fs, f"{path}/sweep.json", s.record())
    # trial ends before the last wave starts; with no more points than slots, the first end (the
    # baselines beside every trial at once overcommitted a 4-CPU test cluster until it hung)
    after = max(1, len(s.points()) - s.max_concurrent)
    print(f"sweep {s.name}: {len(s.points())} trials, {s.max_concurrent} at a time{' (resumed)' if restoring else ''}, in {redact(join(s.storage, s.name))}",
          file=sys.stderr, flush=True)
    if on_last_wave is not None and restoring:  # a restored sweep may be anywhere
        on_last_wave()
    if restoring:  # with its callbacks, restored from tuner.pkl
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True, storage_filesystem=storage_fs)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={k: tune.grid_search(v) for k, v in s.grid.items()},  # the point only: no paths, no keys
            tune_config=tune.TuneConfig(max_concurrent_trials=s.max_concurrent),
            run_config=tune.RunConfig(
                name=s.name,
                storage_path=root,
                storage_filesystem=storage_fs,
                failure_config=tune.FailureConfig(max_failures=s.max_failures),
                callbacks=[Progress(s.name, len(s.points())), OnLastWave(on_last_wave, after)],
                verbose=0,  # Tune's tables every 30 s flooded the terminal; Progress says enough
            ),
        )
    grid = tuner.fit()
    errors = [r.error for r in grid if r.error is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} trial(s) failed; first error: {errors[0]}")
    return grid


def supervised_dir(s: Sweep) -> str:
    """Where the supervised baseline of ``s`` is trained and cached:
    ``<storage>/<name>/baselines/supervised-<key>``, the key a hash of all it depends on (the
    prepared data's manifest, the labels file, the supervised config of the preset), so a sweep
    on other data, labels or preset never reuses it."""
    key = hashlib.sha256()
    key.update(json.dumps(PreparedData(s.data).manifest, sort_keys=True).encode())
    with open(s.labels, "rb") as f:
        key.update(f.read())
    key.update(json.dumps(dataclasses.asdict(make_config("supervised", s.preset)), sort_keys=True).encode())
    return join(s.storage, s.name, "baselines", f"supervised-{key.hexdigest()[:16]}")


def baselines(s: Sweep) -> dict[str, dict[str, float]]:
    """Random-init probe of the sweep's architecture (one per combination of the ``s.random_per``
    grid keys, for keys that change it, e.g. Cross and Learn's second modality) and, with
    ``s.supervised``, the supervised baseline (trained once, see :func:`supervised_dir`)."""
    data = PreparedData(s.data)
    out = {}
    for values in itertools.product(*(s.grid[k] for k in s.random_per)):
        cfg = make_config(s.method, s.preset, {**s.base, **dict(zip(s.random_per, values))})
        out["random init" + "".join(f" ({v})" for v in values)] = objective(s, cfg, runner.open_data(data, cfg), None)
    if s.supervised:
        run_dir = supervised_dir(s)
        cfg = make_config("supervised", s.preset)
        runner.train(cfg, data, run_dir, labels=s.labels, resume=True)
        run = runner.open_run(run_dir)
        out["supervised"] = objective(s, run.cfg, runner.open_data(data, run.cfg), run.checkpoint)
    return out


def write_table(s: Sweep, grid: tune.ResultGrid, base: dict[str, dict[str, float]], title: str) -> str:
    """Paper-style table (one row per grid point, then the baselines) as CSV, Markdown and a
    PNG plot in ``<storage>/<name>/`` (a folder or a URI); returns the Markdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    keys = list(s.grid)
    rows = []
    for r in grid:
        m = r.metrics or {}
        rows.append({**{k: m.get(f"param_{k}") for k in keys}, **{k[6:]: v for k, v in m.items() if k.startswith("probe_")}})
    df = pd.DataFrame(rows).sort_values(keys).reset_index(drop=True)
    encoders = [c for c in df.columns if c not in keys]
    for name, acc in base.items():
        df = pd.concat([df, pd.DataFrame([{keys[0]: name, **acc}])], ignore_index=True)
    shown = df.copy()
    shown[keys[1:]] = shown[keys[1:]].fillna("")  # baseline rows have no setting of the other keys
    for c in encoders:
        shown[c] = (100 * shown[c]).map(lambda v: "" if pd.isna(v) else f"{v:.1f}")  # blank: no such encoder
    how = f", {s.probe_folds}-fold cross-validation" if s.probe_folds else ""
    md = f"### {title}\n\n" + shown.to_markdown(index=False) + f"\n\n(linear-probe top-1, %{how})\n"
    fig, ax = plt.subplots(figsize=(6, 4))
    sweep_rows = df.iloc[: len(rows)]
    # one line per encoder and per setting of the other grid keys (e.g. sync on/off)
    groups = sweep_rows.groupby(keys[1:], sort=False) if len(keys) > 1 else [((), sweep_rows)]
    for i, c in enumerate(encoders):
        for g, (setting, sub) in enumerate(groups):
            setting = setting if isinstance(setting, tuple) else (setting,)
            label = " ".join([s.method, c] + [f"{k}={v}" for k, v in zip(keys[1:], setting)])
            ax.plot([str(v) for v in sub[keys[0]]], 100 * sub[c], marker="o", ls=["-", "-.", "--"][g % 3], label=label, color=f"C{i}")
        for j, (name, acc) in enumerate(base.items()):
            if c in acc:
                ax.axhline(100 * acc[c], ls="--" if j == 0 else ":", color=f"C{i}", alpha=0.6, label=f"{name} {c}")
    ax.set_xlabel(keys[0])
    ax.set_ylabel("linear-probe top-1 (%)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    plt.close(fig)
    fs, root = resolve(s.storage)
    for file, content in [("results.csv", df.to_csv(index=False).encode()), ("results.md", md.encode()), ("results.png", png.getvalue())]:
        with fs.open_output_stream(f"{root}/{s.name}/{file}") as f:
            f.write(content)
    return md


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


def experiment_main(
    method: str,
    title: str,
    *,
    name: str,
    grid: dict[str, list],
    paper_grid: dict[str, list],
    base: dict[str, Any] | None = None,
    tiny_base: dict[str, Any] | None = None,
    quick_base: dict[str, Any] | None = None,
    probe_folds: int = 0,
    random_per: tuple[str, ...] = (),
    argv: list[str] | None = None,
) -> str:
    """Command line of every ``experiments/*.py`` sweep: with no arguments it runs ``grid`` on
    the embedded dataset; ``--data/--labels`` run on real data, ``--paper`` the paper's grid and
    encoders, ``--address auto`` on a running cluster, ``--resume`` continues a killed sweep,
    ``--overwrite`` starts a sweep over. ``base`` overrides every trial's config, ``tiny_base``
    too unless ``--paper``, ``quick_base`` too with ``--quick``; ``--set`` overrides them all.
    ``random_per``: see :func:`baselines`. Errors are reported as ``raysup``'s
    (:func:`raysup.cli.report_errors`): a refused sweep or a bad argument prints one line on
    stderr and exits 2, any other error one line and exits 1, the traceback going to a log file
    (``--debug``: to stderr); nothing printed or logged holds a credential."""
    from raysup.cli import ArgumentParser, report_errors

    p = ArgumentParser(description=title)
    p.add_argument("--data", help="prepared folder or URI (default: the embedded synthetic set)")
    p.add_argument("--labels", help="labels CSV for the probe (required with --data)")
    p.add_argument("--storage", default="results", help="where Tune writes (folder or s3:// URI)")
    p.add_argument("--paper", action="store_true", help="the paper's grid, encoders and schedule")
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
    a = p.parse_args(argv)
    if a.data and not a.labels:
        p.error("--data needs --labels")
    if "://" in a.storage and not a.data:
        p.error("a URI --storage needs --data and --labels (the embedded dataset is made on local disk)")
    table = []
    code = report_errors(p.prog, name, lambda: table.append(
        _experiment(a, method, title, name, paper_grid if a.paper else grid, base, tiny_base, quick_base, probe_folds, random_per)), debug=a.debug)
    if code:
        raise SystemExit(code)
    return table[0]


def _experiment(a, method, title, name, chosen, base, tiny_base, quick_base, probe_folds, random_per) -> str:
    import ray

    clock = {"start": time.perf_counter()}  # wall time by stage: <storage>/<name>/timing.json (experiments/bench/sweep.py)
    storage = a.storage if "://" in a.storage else os.path.abspath(a.storage)
    data, labels = (a.data, a.labels) if a.data else default_dataset(os.path.join(storage, "synthetic"))
    fixed = {**(base or {}), **({} if a.paper else tiny_base or {}), "workers": a.workers, "gpus_per_worker": a.gpus_per_worker}
    if a.quick:  # two points of the first key, the first value of the others
        chosen = {k: v[: 2 if i == 0 else 1] for i, (k, v) in enumerate(chosen.items())}
        fixed.update(quick_base or {})
    fixed.update(parse_overrides(a.set))
    s = Sweep(
        method, chosen, data, labels, storage, name, preset="paper" if a.paper else "tiny", base=fixed,
        max_concurrent=a.max_concurrent, probe_folds=a.probe_folds if a.probe_folds is not None else 0 if a.data else probe_folds,
        supervised=not (a.no_supervised or a.quick), random_per=random_per,
    )
    check_start(s, resume=a.resume, overwrite=a.overwrite)  # before any work
    init_ray(a.address)
    if not a.data:
        make_default_dataset(os.path.join(storage, "synthetic"))
    clock["data"] = time.perf_counter()
    # the baselines train and probe as a Ray task beside the sweep's last wave of trials
    base_task = []

    def start_baselines() -> None:
        clock["baselines_start"] = time.perf_counter()
        base_task.append(ray.remote(num_cpus=s.trial_cpus)(baselines).remote(s))

    grid_result = run_sweep(s, resume=a.resume, overwrite=a.overwrite, on_last_wave=start_baselines)
    clock["sweep"] = time.perf_counter()
    if not base_task:  # the sweep never signalled its last wave
        start_baselines()
    base_acc = ray.get(base_task[0])
    clock["baselines"] = time.perf_counter()
    md = write_table(s, grid_result, base_acc, title)
    clock["table"] = time.perf_counter()
    fs, root = resolve(storage)
    write_json(fs, f"{root}/{name}/timing.json", {
        "data_s": clock["data"] - clock["start"], "sweep_s": clock["sweep"] - clock["data"],
        "baselines_wait_s": clock["baselines"] - clock["sweep"], "baselines_s": clock["baselines"] - clock["baselines_start"],
        "table_s": clock["table"] - clock["baselines"], "total_s": clock["table"] - clock["start"], "max_concurrent": s.max_concurrent,
    })
    print(md)
    where = redact(join(storage, name))
    print(f"Tune results, results.csv/.md/.png: {where}  (raysup dashboard {where})")
    return md
