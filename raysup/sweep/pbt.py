"""A PBT trial's training (``raysup sweep --scheduler pbt``): Population Based Training
(Jaderberg et al. 2017, arXiv:1711.09846) with Tune's ``PopulationBasedTraining``.

The trial trains in segments of ``perturbation_interval`` epochs, each a ``fit`` of its own
(``RUN_DIR/pbt_<n>/``) that starts from the previous segment's checkpoint, and reports the
segment's last epoch with that checkpoint to Tune. When PBT has the trial exploit a better one,
Tune restarts it with the donor's checkpoint (``tune.get_checkpoint()``) and a perturbed config:
the next segment loads the donor's model, optimiser state, scheduler step, epoch and data
position, and puts the new lr / weight decay into the optimiser (:func:`raysup.train.set_optim`).
Each segment is a line of ``RUN_DIR/pbt.jsonl``: its settings, where it started from (trial and
epoch) and its metrics, so a trial's settings history is on record."""
from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from typing import Any

from ray import tune

from raysup import runner
from raysup.checkpoint import CHECKPOINT_FILE, latest_checkpoint
from raysup.config import TrainConfig
from raysup.data.ingest import PreparedData
from raysup.data.storage import join, read_json, resolve, uri_of, write_json
from raysup.methods import method_module
from raysup.train import Segment, append_line, read_lines

ORIGIN_FILE = "pbt.json"  # in a Tune checkpoint: the trial, epochs and settings it was taken at
DONE = "pbt_done"  # 1 in a trial's last report: Tune stops it there (PBT must not exploit it then)
_SEGMENT = re.compile(r"pbt_[0-9]{3,}")


def train(cfg: TrainConfig, data: PreparedData, run_dir: str, point: dict[str, Any], storage: str, labels: str, interval: int) -> dict[str, Any]:
    """Train ``cfg`` (the trial's current settings ``point``) into ``run_dir`` segment after
    segment from where Tune's checkpoint says (the trial's own, or a donor's after an exploit),
    reporting every segment but the last with its checkpoint to Tune; returns the last one's
    metrics (the trial reports them with its probe). ``storage``: the sweep's storage (Tune's
    checkpoints are there)."""
    fs, root = resolve(run_dir)
    stage = method_module(cfg.method_name).datasets(cfg, data, labels)
    start = tune.get_checkpoint()
    restore = uri_of(storage, start.path) if start is not None else None
    origin = read_json(*_file(restore, ORIGIN_FILE)) if restore else {"trial": _trial_id(), "epochs": 0}
    epochs, n = origin["epochs"], len(read_lines(fs, f"{root}/pbt.jsonl"))
    while True:
        name = f"pbt_{n:03d}"
        until = min(epochs + interval, cfg.epochs)
        segment = Segment(restore=restore, until_epoch=until, may_change=tuple(point))
        metrics = runner.fit_stage(dataclasses.replace(stage, name=name), cfg, data, run_dir, resume=True, callbacks=None, segment=segment,
                                   tensorboard=False)
        first, epochs = epochs, int(metrics.get("epoch", until - 1)) + 1
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        append_line(fs, f"{root}/pbt.jsonl", {"segment": n, "trial": _trial_id(), "from_trial": origin["trial"], "from_epoch": first,
                                             "epochs": epochs, "config": point, "metrics": numbers})
        _drop_segments(fs, root, keep=name)
        restore, origin, n = latest_checkpoint(join(run_dir, name)), {"trial": _trial_id(), "epochs": epochs}, n + 1
        if epochs >= cfg.epochs or metrics.get("stopped_early"):
            return {**metrics, DONE: 1}
        with tempfile.TemporaryDirectory(prefix="raysup-pbt-") as tmp:
            tune.report({**numbers, DONE: 0}, checkpoint=_tune_checkpoint(restore, {**origin, "config": point}, tmp))


def _trial_id() -> str:
    return tune.get_context().get_trial_id()


def _file(folder: str, name: str):
    """(filesystem, path) of file ``name`` in ``folder`` (a folder or URI)."""
    fs, path = resolve(folder)
    return fs, f"{path}/{name}"


def _tune_checkpoint(train_checkpoint: str, origin: dict[str, Any], tmp: str) -> tune.Checkpoint:
    """A Tune checkpoint (Tune copies it into the trial's folder) in the local folder ``tmp``
    of a Train checkpoint directory (folder or URI): its ``checkpoint.pt`` and :data:`ORIGIN_FILE`."""
    fs, path = _file(train_checkpoint, CHECKPOINT_FILE)
    with fs.open_input_stream(path) as f, open(os.path.join(tmp, CHECKPOINT_FILE), "wb") as out:
        while chunk := f.read(1 << 24):
            out.write(chunk)
    write_json(*_file(tmp, ORIGIN_FILE), origin)
    return tune.Checkpoint.from_directory(tmp)


def _drop_segments(fs, root: str, *, keep: str) -> None:
    """Delete the trial's earlier segment folders (their last checkpoints are in Tune's trial
    folder): a run keeps one segment's checkpoints, not one per segment."""
    import pyarrow.fs as pafs

    for info in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
        if info.type == pafs.FileType.Directory and _SEGMENT.fullmatch(info.base_name) and info.base_name != keep:
            fs.delete_dir(info.path)

