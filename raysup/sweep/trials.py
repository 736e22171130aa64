"""What a sweep is (:class:`Sweep`) and one of its trials: a Tune function trainable that trains a
grid point with the runner, then probes it."""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

from ray import tune

from raysup import runner
from raysup.data.ingest import PreparedData
from raysup.data.storage import join, redact
from raysup.evaluate import cv_probe, probe
from raysup.methods import make_config
from raysup.sweep import pbt
from raysup.sweep.space import corners

SEARCH_FIELDS = ("space", "samples", "search", "scheduler", "metric", "mode", "perturbation_interval")  # raysup sweep's, recorded only when set
PAPER_FIELDS = ("protocol", "eval_data", "pretrain_labels", "row_base", "paper_epochs")  # a --paper sweep's, recorded only when set


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
    # a user's search (raysup sweep, raysup.sweep.space): sampled keys → [distribution, *args]; trials
    # drawn per grid point (Optuna, HyperOpt: in all); Tune's searcher and scheduler on metric/mode
    space: dict[str, list] = field(default_factory=dict)
    samples: int = 1
    search: str = "grid"
    scheduler: str = "fifo"
    metric: str = ""
    mode: str = "max"
    perturbation_interval: int = 1  # PBT: epochs per segment (raysup.sweep.pbt)
    # evaluation (raysup.sweep.paper_eval): "linear", the linear probe on `labels`; "paper", the
    # method's paper protocols (finetuning where its paper's table finetunes) on `eval_data` (the
    # downstream set's prepared folder; "": `data`) with `labels`; the supervised baseline trains
    # on `pretrain_labels` (the pretraining set's labels, XDC's Superv, papers/xdc.md L99; "": `labels`)
    protocol: str = "linear"
    eval_data: str = ""
    pretrain_labels: str = ""
    published: dict = field(default_factory=dict)  # the table's published numbers (results.published_columns); not recorded
    # rows whose paper recipe differs in more than the grid key: ((grid values, overrides), ...);
    # a point that has those values trains with those overrides (over `base`)
    row_base: tuple = ()
    paper_epochs: int = 0  # the paper protocols' finetuning epochs (0: the papers'; a smoke test's few)

    def config(self, point: dict[str, Any]):
        """The config of the trial at ``point``: the preset, ``base``, the ``row_base`` overrides
        of the rows it matches, then the point."""
        rows = {k: v for match, over in self.row_base if match.items() <= point.items() for k, v in over.items()}
        return make_config(self.method, self.preset, {**self.base, **rows, **point})

    def points(self) -> list[dict[str, Any]]:
        """The grid's points (with sampled keys: every point with their extremes, the configs checked before a sweep)."""
        return corners(self.grid, self.space)

    def trials(self) -> int:
        """How many trials Tune runs: ``samples`` per grid point, or ``samples`` in all for Optuna and HyperOpt."""
        return self.samples * (1 if self.search in ("optuna", "hyperopt") else len(corners(self.grid, {})))

    def record(self) -> dict[str, Any]:
        """What defines the sweep, as JSON (``sweep.json``): every field but where it is stored,
        URIs without credentials; the search fields only when set (a paper sweep's record, and its
        resume, as before they existed)."""
        default = Sweep(self.method, {}, "", "", "", "")
        d = {k: v for k, v in dataclasses.asdict(self).items()
             if k not in ("storage", "published") and not (k in SEARCH_FIELDS + PAPER_FIELDS and v == getattr(default, k))}
        uris = {k: redact(d[k]) for k in ("data", "labels", "eval_data", "pretrain_labels") if k in d}
        return json.loads(json.dumps({**d, **uris}))


def trial(point: dict[str, Any], s: Sweep) -> None:
    """Tune function trainable: train one point (its per-epoch metrics reported as they come, so a
    scheduler can stop it), then report its last training metrics and probe accuracies. Only the
    point is Tune's config (saved in params.json); the sweep comes by ``tune.with_parameters``."""
    from ray.tune.integration.ray_train import TuneReportCallback

    cfg = s.config(point)
    data = runner.open_data(s.data, cfg)
    run_dir = join(s.storage, s.name, "runs", tune.get_context().get_trial_id())
    t = time.perf_counter()
    if s.scheduler == "pbt":  # segments, each reported with its checkpoint (raysup.sweep.pbt)
        final = pbt.train(cfg, data, run_dir, point, s.storage, s.labels, s.perturbation_interval)
    else:
        final = runner.train(cfg, data, run_dir, labels=s.labels, resume=True, callbacks=[TuneReportCallback()], tensorboard=False)
    timing = {"time_run_s": time.perf_counter() - t}
    t = time.perf_counter()
    run = runner.open_run(run_dir)  # probed as trained (e.g. with the classes the labels gave)
    acc = objective(s, run.cfg, data, run.checkpoint, out=run_dir)
    timing["time_probe_s"] = time.perf_counter() - t
    last = {k: v for k, v in final.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}  # the metric a searcher compares
    tune.report({**last, **{f"probe_{k}": v for k, v in acc.items()}, **{f"param_{k}": v for k, v in point.items()}, **timing})


def objective(s: Sweep, cfg, data: PreparedData, checkpoint: str | None, *, out: str = "") -> dict[str, float]:
    """Linear-probe top-1 per encoder: on the labels' test split, or by ``s.probe_folds``-fold
    cross-validation (:func:`raysup.evaluate.cv_probe`); ``data`` read at ``cfg.crop_size``.
    ``s.protocol == "paper"``: the paper protocols' top-1 per result key, their runs in ``out``
    (:func:`raysup.sweep.paper_eval.paper_objective`)."""
    if s.protocol == "paper":
        from raysup.sweep.paper_eval import paper_objective

        return paper_objective(s, cfg, checkpoint, out)
    if s.probe_folds:
        return cv_probe(cfg, data, s.labels, checkpoint, folds=s.probe_folds)
    return probe(cfg, data, s.labels, checkpoint)
