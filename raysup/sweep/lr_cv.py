"""Cross-validated finetuning learning rate, as a Ray Tune sweep (papers/xdc.md L402, Tables 11-12
L412-423: "we cross-validate the finetuning using the same set of base learning rates").

One trial per base lr finetunes the pretrained weights on the train split less a held-out part
(``val_fraction`` of its videos, by a stable hash of the video id) and scores that part; the
trials run in parallel (``max_concurrent``). The lr with the best validation top-1 is then
finetuned on the whole train split and tested on the test split. The paper reports the best
result over its grid (L419), i.e. it picks on the test split; we pick on validation, so the test
number is not selected on itself (ours).
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile

from ray import tune

from raysup.config import TrainConfig
from raysup.data.labels import LabelRow, read_labels_csv, write_labels_csv
from raysup.data.storage import join, resolve, write_json
from raysup.data.tables import is_held_out
from raysup.protocol_specs import FinetuneProtocol
from raysup.protocols import run_protocols


def validation_rows(rows: list[LabelRow], fraction: float) -> list[LabelRow]:
    """The labels of the lr search: the train split's videos, ``fraction`` of them (by
    :func:`raysup.data.tables.is_held_out`) as its ``test`` part; the real test videos left out."""
    train = [r for r in rows if r.split == "train"]
    val = [dataclasses.replace(r, split="test") if is_held_out(r.video_id, fraction) else r for r in train]
    if not any(r.split == "test" for r in val) or all(r.split == "test" for r in val):
        raise ValueError(f"val_fraction: {fraction} of the {len(train)} train videos leaves no validation or no training video; change it")
    return val


def with_lr(p: FinetuneProtocol, lr: float) -> FinetuneProtocol:
    return dataclasses.replace(p, optim=dataclasses.replace(p.optim, lr=lr))


def _finetune(rows: list[LabelRow], cfg: TrainConfig, data: str, checkpoint: str | None, out: str, p: FinetuneProtocol,
              epochs: int | None) -> float:
    """Top-1 of ``p`` finetuned from ``checkpoint`` on ``rows``' train split, tested on its test split."""
    from raysup import runner

    with tempfile.TemporaryDirectory() as tmp:  # the labels CSV where this process runs
        csv = os.path.join(tmp, "labels.csv")
        write_labels_csv(rows, csv)
        return run_protocols(cfg, runner.open_data(data, cfg), csv, checkpoint, out, (p,), epochs=epochs)[p.key]


def _trial(config: dict, *, rows, cfg, data, checkpoint, out, protocol, epochs) -> None:
    lr = config["lr"]
    tune.report({"val_top1": _finetune(rows, cfg, data, checkpoint, join(out, f"lr_{lr:g}"), with_lr(protocol, lr), epochs)})


def lr_cv(cfg: TrainConfig, data: str, labels_csv: str, checkpoint: str | None, out: str, protocol: FinetuneProtocol,
          lrs: tuple[float, ...], *, val_fraction: float = 0.1, max_concurrent: int = 2, epochs: int | None = None) -> dict:
    """Run the search in ``out`` (a folder or URI: ``out/lr_<lr>`` per trial, ``out/test_lr_<lr>``
    for the test run, Tune's state in ``out/tune``) and return and write ``out/lr_cv.json``:
    {"val_top1": {lr: top-1}, "best_lr", "test_top1", "val_fraction", "protocol"}. ``epochs``
    overrides the protocol's (a quick check)."""
    from raysup.sweep.tune_storage import tune_filesystem

    rows = read_labels_csv(labels_csv)
    val = validation_rows(rows, val_fraction)
    fs, root = resolve(out)
    fn = tune.with_parameters(_trial, rows=val, cfg=cfg, data=data, checkpoint=checkpoint, out=out, protocol=protocol, epochs=epochs)
    tuner = tune.Tuner(
        tune.with_resources(fn, {"CPU": 0.5}),
        param_space={"lr": tune.grid_search(list(lrs))},
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent),
        run_config=tune.RunConfig(name="tune", storage_path=root, storage_filesystem=None if "://" not in out else tune_filesystem(fs), verbose=0),
    )
    grid = tuner.fit()
    errors = [r.error for r in grid if r.error is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} lr trial(s) failed; first error: {errors[0]}")
    val_top1 = {r.config["lr"]: r.metrics["val_top1"] for r in grid}
    best = max(sorted(val_top1), key=lambda lr: val_top1[lr])  # ties: the smallest lr
    test = _finetune(rows, cfg, data, checkpoint, join(out, f"test_lr_{best:g}"), with_lr(protocol, best), epochs)
    result = {"protocol": protocol.key, "val_fraction": val_fraction, "val_top1": {f"{lr:g}": v for lr, v in sorted(val_top1.items())},
              "best_lr": best, "test_top1": test}
    write_json(fs, f"{root}/lr_cv.json", result)
    return json.loads(json.dumps(result))
