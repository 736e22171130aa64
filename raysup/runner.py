"""Run a method: the one entry path of ``raysup train``, Tune trials, probes and the visualiser.

:func:`train` opens the prepared data at the run's ``crop_size`` once, calls the method's
``check``, asks it for each stage's datasets (stored cells), decodes them (random crops to
train, centre crops to validate) and trains with :func:`raysup.train.fit`. :func:`open_run`
is the other half: a finished (or running) run's config and latest checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raysup.checkpoint import latest_checkpoint, load_checkpoint_file
from raysup.config import TrainConfig
from raysup.data.device_decode import DeviceDecode
from raysup.data.ingest import PreparedData
from raysup.methods import load_config, method_module
from raysup.methods.base import Stage, StageLog
from raysup.train import Segment, fit


def open_data(data: str | PreparedData, cfg: TrainConfig) -> PreparedData:
    """The prepared set (folder, URI or an opened one) read at ``cfg.crop_size``; a crop above the
    prepared size is a ConfigError naming ``crop_size``."""
    return (data if isinstance(data, PreparedData) else PreparedData(data)).cropped(cfg.crop_size)


def check(cfg: TrainConfig, data: str | PreparedData) -> PreparedData:
    """Everything a run of ``cfg`` on ``data`` can be refused for before any work; returns the
    opened data (:func:`open_data`)."""
    opened = open_data(data, cfg)
    opened.check_decode_on(cfg.decode_on)
    method_module(cfg.method_name).check(cfg, opened)
    return opened


def train(cfg: TrainConfig, data: str | PreparedData, run_dir: str, *, labels: str | None = None, resume: bool = False,
          callbacks: list | None = None, tensorboard: bool = True) -> dict[str, Any]:
    """Train ``cfg``'s method on ``data`` into ``run_dir``, stage after stage; returns the last
    stage's final metrics. ``resume`` continues a stopped run (finished stages of a multi-stage
    method are not redone); ``callbacks`` go to every ``fit`` (e.g. Tune's report callback);
    ``tensorboard=False``: no ``run_dir/tensorboard`` (a sweep trial's curves are in the sweep's entry)."""
    data = check(cfg, data)
    mod = method_module(cfg.method_name)
    log = StageLog(run_dir, labels=labels, resume=resume)
    stages = mod.stages(cfg, data, log) if hasattr(mod, "stages") else iter([mod.datasets(cfg, data, labels)])
    for stage in stages:
        metrics = fit_stage(stage, cfg, data, run_dir, resume=resume, callbacks=callbacks, step_offset=log.epochs, tensorboard=tensorboard)
        log.finish(stage.name, metrics)
    return log.metrics


def stage_datasets(stage: Stage, data: PreparedData, on: str = "tasks") -> dict[str, Any]:
    """A stage's streams as ``fit`` takes them, decoded here and nowhere else (``on`` "device":
    by the train workers, ``decode_on``): random crops to train, centre crops to validate. Each
    must stream (:func:`barriers`)."""
    datasets = {"train": data.decode(stage.train, crop="random", on=on)}
    if stage.val is not None:
        datasets["val"] = data.decode(stage.val, crop="centre", on=on)
    for key, ds in datasets.items():
        if barriers(ds):
            raise ValueError(f"stage {stage.name}: the {key} stream has {', '.join(barriers(ds))}, which wait for the whole input: Ray "
                             "reruns it every epoch, so every epoch would read everything before its first batch; shuffle with "
                             "PreparedData.dataset(..., shuffle=seed) and the train loop's local shuffle buffer (docs/adding-a-method.md)")
    return datasets


def barriers(ds) -> list[str]:
    """The operators of ``ds``'s plan that wait for their whole input (Ray Data's all-to-all
    operators: randomize_block_order, random_shuffle, groupby, sort, repartition; joins of two
    datasets) or hold it (a ``materialize``d dataset's blocks)."""
    from ray.data._internal.logical.operators.all_to_all_operator import AbstractAllToAll
    from ray.data._internal.logical.operators.input_data_operator import InputData
    from ray.data._internal.logical.operators.join_operator import Join

    found, todo = [], [ds._logical_plan.dag]
    while todo:
        op = todo.pop()
        if isinstance(op, (AbstractAllToAll, Join, InputData)):
            found.append(type(op).__name__ if not isinstance(op, InputData) else "materialize")
        todo.extend(op.input_dependencies)
    return found


def fit_stage(stage: Stage, cfg: TrainConfig, data: PreparedData, run_dir: str, *, resume: bool, callbacks: list | None,
              step_offset: int = 0, segment: Segment | None = None, tensorboard: bool = True) -> dict[str, Any]:
    """One :class:`Stage` through :func:`raysup.train.fit` (:func:`stage_datasets`), or the
    ``segment`` of it (a PBT trial's); ``decode_on`` "device": the workers decode the JPEG cells
    (:class:`raysup.data.device_decode.DeviceDecode`)."""
    on = (stage.cfg or cfg).decode_on
    datasets = stage_datasets(stage, data, on)
    return fit(stage.cfg or cfg, method_module(cfg.method_name).build, datasets, run_dir, stage.specs or data.specs,
               rows_per_epoch=stage.rows_per_epoch, name=stage.name, resume=resume, init_checkpoint=stage.init_checkpoint,
               callbacks=callbacks, step_offset=step_offset, extra_metrics=stage.extra_metrics, segment=segment,
               tensorboard=tensorboard, decoder=DeviceDecode(data.layout()) if on == "device" else None)


def side_tasks(cfg: TrainConfig) -> dict[str, dict[str, float]]:
    """Ray resources of the tasks ``cfg``'s method starts beside its train workers (none unless it says)."""
    mod = method_module(cfg.method_name)
    return mod.side_tasks(cfg) if hasattr(mod, "side_tasks") else {}


@dataclass(frozen=True)
class Run:
    """A run folder's latest checkpoint and the config it was trained with."""

    cfg: TrainConfig
    checkpoint: str


def open_run(run_dir: str) -> Run:
    """The run in ``run_dir`` (its latest checkpoint, of any stage)."""
    ckpt = latest_checkpoint(run_dir)
    return Run(load_config(load_checkpoint_file(ckpt)["config"]), ckpt)
