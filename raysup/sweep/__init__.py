"""Ray Tune sweeps (the only ``ray.tune`` import): the papers' ablations and a user's own.

Each trial is a Tune function trainable that trains one config with :func:`raysup.runner.train`
(TorchTrainer(s) reporting to Tune through ``TuneReportCallback``), then reports the
linear-probe top-1 of every encoder as ``probe_<encoder>``. Results become a table (CSV,
Markdown) and a plot next to Tune's own results, on the same storage (folder or URI).

A sweep's folder ``<storage>/<name>/`` records its arguments (``sweep.json``): a rerun without
``resume`` refuses to replace it (unless ``overwrite``), and a resume with other arguments is
refused, naming them. Credentials in URIs never reach what Tune writes: trials get the
:class:`Sweep` through ``tune.with_parameters`` (Ray's object store), Tune's filesystem pickles
without keys, and everything recorded or printed goes through :func:`raysup.data.storage.redact`.

The modules: :mod:`.trials` (what a sweep is, one trial), :mod:`.driver` (running it with Tune:
refusals, capacity, progress), :mod:`.tune_storage` (a key-safe S3 filesystem for Tune),
:mod:`.results` (baselines, the table and plot), :mod:`.space` (a user's search space, searcher
and scheduler: ``raysup sweep``), :mod:`.experiment` (the experiment scripts' command line: an
:class:`Experiment` and :func:`main`; :func:`run`, a sweep with its baselines and table).
"""
from raysup.resources import node_shapes
from raysup.sweep.driver import check_fits, check_start, clear, run_sweep
from raysup.sweep.experiment import Experiment, default_dataset, main, make_default_dataset, run
from raysup.sweep.results import baselines, supervised_dir, write_table
from raysup.sweep.trials import Sweep, objective, trial

__all__ = [
    "Experiment", "Sweep", "baselines", "check_fits", "check_start", "clear", "default_dataset", "main",
    "make_default_dataset", "node_shapes", "objective", "run", "run_sweep", "supervised_dir", "trial", "write_table",
]
