"""Running a :class:`~raysup.sweep.trials.Sweep` with Ray Tune: refusals before any work (an
existing sweep, other arguments on resume, configs the data cannot serve, trials no node could
hold), progress lines, resume, and ``--overwrite`` that deletes only what a sweep wrote."""
from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Callable

import pyarrow.fs as pafs
from ray import tune
from ray.tune.logger import TBXLoggerCallback

from raysup import runner
from raysup.data.ingest import PreparedData
from raysup.data.storage import exists, join, read_json, redact, resolve, write_json
from raysup.resources import node_shapes, unfit
from raysup.sweep import pbt, space
from raysup.sweep.trials import Sweep, trial
from raysup.sweep.tune_storage import tune_filesystem


def check_fits(s: Sweep, shapes: list[dict[str, float]]) -> None:
    """Raise ValueError, naming the request and the nodes, if some trial of ``s`` could never be
    scheduled on nodes of these ``shapes`` (it would wait forever): the trial itself, one train
    worker, the probe's feature extractor and the XDC k-means task must each fit on one node,
    and the trial with all its train workers must fit on all the nodes together."""
    for params in s.points():
        cfg = s.config(params)
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
        point = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.config.items())
        print(f"{self.name} [{self.ended}/{self.total}] {point}: {what}", file=sys.stderr, flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ended += 1
        r = trial.last_result or {}
        probes = ", ".join(f"{k[6:]} {100 * v:.1f}%" for k, v in r.items() if k.startswith("probe_"))
        if probes:
            self._say(trial, f"done in {r.get('time_total_s', 0) / 60:.1f} min, probe top-1 {probes}")
        else:  # a scheduler stopped it before its probe
            self._say(trial, f"stopped early by the scheduler after {r.get('training_iteration', 0)} epochs")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._say(trial, f"failed, retrying (error.txt in {trial.path})")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.ended += 1
        self._say(trial, f"failed (error.txt in {trial.path})")


def trial_name(config: dict) -> str:
    """A trial's TensorBoard entry: its settings, ``method.k=16`` (sampled values to 4 digits,
    several keys joined by ``,``; no ``/``, which would nest folders)."""
    return ",".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items()).replace("/", "_")


class TrialBoard(TBXLoggerCallback):
    """One TensorBoard entry per trial, named by its settings (:func:`trial_name`), in the sweep's
    ``tensorboard/`` folder (``raysup dashboard`` opens it): every report's numbers as
    ``ray/tune/<metric>`` scalars at step ``training_iteration`` (one per epoch, then the final
    report with the probes), lists as histograms, and at the trial's end its settings and final
    metrics as hparams (TensorBoard's HParams tab: the sweep's table). Replaces Tune's own logger,
    which wrote the same under the ``trial_…`` folders' opaque names. Two trials with the same
    settings (``--samples`` of a grid) are told apart by the trial id."""

    def __init__(self):
        super().__init__()
        self.names: dict[str, str] = {}  # trial id → entry

    def log_trial_start(self, trial):
        if trial in self._trial_writer:
            self._trial_writer[trial].close()
        name = self.names.get(trial.trial_id) or trial_name(trial.config)
        if name in self.names.values() and self.names.get(trial.trial_id) != name:
            name = f"{name},{trial.trial_id}"
        self.names[trial.trial_id] = name
        # the experiment's driver staging folder, which Tune copies to the sweep's storage
        self._trial_writer[trial] = self._summary_writer_cls(os.path.join(trial.local_experiment_path, "tensorboard", name), flush_secs=30)
        self._trial_result[trial] = {}


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
# (tuner.pkl, experiment_state-<date>.json, basic-variant-state-<date>.json, its storage marker,
# PBT's pbt_global.txt and pbt_policy_<trial>.txt)
# and trial folders (<trainable>_<5 hex>_<5 digits>_<tag>_<date>), raysup's runs/ and tensorboard/, sweep.json,
# timing.json (and their temporary .tmp) and results.*. The cached baselines/ stay, and so does
# anything else (a user's notebook, figures).
_SWEEP_FILES = re.compile(r"(sweep|timing)\.json(\.tmp)?|results\.(csv|md|png)|tuner\.pkl|pbt_global\.txt|pbt_policy_.+\.txt|"
                          r"(experiment_state|basic-variant-state)-[0-9_-]+\.json|\.validate_storage_marker")
_SWEEP_DIRS = re.compile(rf"runs|tensorboard|{trial.__name__}_[0-9a-f]{{5}}_[0-9]{{5}}_.+")


def tune_config(s: Sweep) -> tune.TuneConfig:
    """Tune's settings for ``s``: its searcher, scheduler and samples (:mod:`raysup.sweep.space`), trials at once."""
    epochs = max(s.config(p).epochs for p in s.points())
    return tune.TuneConfig(max_concurrent_trials=s.max_concurrent, num_samples=s.samples, search_alg=space.searcher(s.search, s.metric, s.mode),
                           scheduler=space.scheduler(s.scheduler, s.metric, s.mode, epochs, space.mutations(s.grid, s.space)))


def clear(fs: pafs.FileSystem, path: str) -> None:
    """Delete what a sweep wrote in its folder ``path`` (see :data:`_SWEEP_FILES`), nothing else."""
    for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
        if info.type == pafs.FileType.Directory and _SWEEP_DIRS.fullmatch(info.base_name):
            fs.delete_dir(info.path)
        elif info.type == pafs.FileType.File and _SWEEP_FILES.fullmatch(info.base_name):
            fs.delete_file(info.path)


def run_sweep(s: Sweep, *, resume: bool = False, overwrite: bool = False, autoscaler_config: str | None = None,
              on_last_wave: Callable[[], None] | None = None) -> tune.ResultGrid:
    """Run the sweep (its grid, samples, searcher and scheduler); with ``resume``, continue it (finished trials are not redone); with
    ``overwrite``, start it over (cached baselines stay). Refused as :func:`check_start` says; a
    sweep that could never be scheduled or whose configs the data cannot serve fails first
    (:func:`check_fits` against :func:`node_shapes`, each method's ``check``). ``on_last_wave`` is called once, as the last wave of trials starts (see
    :class:`OnLastWave`). Progress: one line per trial on stderr (:class:`Progress`)."""
    check_start(s, resume=resume, overwrite=overwrite)
    data = PreparedData(s.data)
    for point in s.points():  # a config the data cannot serve fails here, not in every trial
        runner.check(s.config(point), data)
    check_fits(s, node_shapes(autoscaler_config))
    _autoscaling_coordinator_here()
    fs, root = resolve(s.storage)
    storage_fs = None if "://" not in s.storage else tune_filesystem(fs)  # keeps a URI's endpoint
    path = f"{root}/{s.name}"
    trainable = tune.with_resources(tune.with_parameters(trial, s=s), {"CPU": s.trial_cpus})
    restoring = resume and tune.Tuner.can_restore(path, storage_filesystem=storage_fs)
    if overwrite:
        clear(fs, path)
    if not restoring:
        fs.create_dir(path)
        write_json(fs, f"{path}/sweep.json", s.record())
    # trial ends before the last wave starts; with no more points than slots, the first end (the
    # baselines beside every trial at once overcommitted a 4-CPU test cluster until it hung)
    after = max(1, s.trials() - s.max_concurrent)
    print(f"sweep {s.name}: {s.trials()} trials, {s.max_concurrent} at a time{' (resumed)' if restoring else ''}, in {redact(join(s.storage, s.name))}",
          file=sys.stderr, flush=True)
    if on_last_wave is not None and restoring:  # a restored sweep may be anywhere
        on_last_wave()
    # a trial a scheduler stops stays blocked in its next report, its TorchTrainer and train workers
    # holding their CPUs, until Tune kills its actor: 600 s later by default (the next trials waited)
    os.environ.setdefault("TUNE_FORCE_TRIAL_CLEANUP_S", "5")
    if restoring:  # with its callbacks, restored from tuner.pkl
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True, storage_filesystem=storage_fs)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=space.param_space(s.grid, s.space, s.search),  # the point only: no paths, no keys
            tune_config=tune_config(s),
            run_config=tune.RunConfig(
                name=s.name,
                storage_path=root,
                storage_filesystem=storage_fs,
                failure_config=tune.FailureConfig(max_failures=s.max_failures),
                # PBT: a trial's last report (pbt.DONE) stops it before PBT could exploit it; the three
                # latest segment checkpoints a trial reported are kept (PBT clones the latest; Tune
                # warns on stderr below three)
                stop={pbt.DONE: 1} if s.scheduler == "pbt" else None,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=3),
                callbacks=[Progress(s.name, s.trials()), OnLastWave(on_last_wave, after), TrialBoard()],
                verbose=0,  # Tune's tables every 30 s flooded the terminal; Progress says enough
            ),
        )
    # Tune's advice to PBT users to reuse actors: a raysup segment is a new Train run anyway
    warnings.filterwarnings("ignore", "Consider boosting PBT performance", UserWarning)
    grid = tuner.fit()
    errors = [r.error for r in grid if r.error is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} trial(s) failed; first error: {errors[0]}")
    return grid
