"""Linear probe and finetuning of a run's encoders on labelled clips (frozen features averaged
over each video's clips; train/test from the labels CSV). The papers' own protocols are in
:mod:`raysup.protocols`."""
from __future__ import annotations

import re
import sys
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from raysup.checkpoint import load_checkpoint_file
from raysup.config import ConfigError, TrainConfig
from raysup.data.ingest import ClipCollate, PreparedData
from raysup.data.labels import LabelRow, class_index, label_of, read_labels_csv
from raysup.data.tables import join_columns
from raysup.features import extract_features, video_average
from raysup.methods import method_module


def linear_probe_model(x_train, y_train, seed: int = 0):
    """An L2-regularised logistic regression on standardised features, fitted (regularisation
    chosen by 3-fold cross-validation on the train split): a scikit-learn pipeline."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = int(min(3, np.bincount(y_train).min())) if len(y_train) else 0
    clf = make_pipeline(
        StandardScaler(),
        LogisticRegressionCV(Cs=[0.01, 0.1, 1.0, 10.0], cv=max(2, folds), max_iter=3000, random_state=seed),
    )
    with warnings.catch_warnings():  # scikit-learn 1.8's notices of future default changes
        warnings.simplefilter("ignore", FutureWarning)
        clf.fit(x_train, y_train)
    return clf


def linear_probe_accuracy(x_train, y_train, x_test, y_test, seed: int = 0) -> float:
    """Top-1 of :func:`linear_probe_model` fitted on the train split."""
    return float((linear_probe_model(x_train, y_train, seed).predict(x_test) == y_test).mean())


def labelled(rows: list[LabelRow], present: set[str], *, splits: tuple[str, ...] = ("train", "test")) -> dict[str, str]:
    """Split by video for the labelled videos that were prepared. Rows of videos that were not
    prepared are counted on stderr; a split left without videos is a ConfigError."""
    split = {r.video_id: r.split for r in rows if r.video_id in present}
    missing = sum(r.video_id not in present for r in rows)
    if missing:
        print(f"labels: {missing} of {len(rows)} rows name videos that are not in the prepared data; probing without them", file=sys.stderr)
    for name in splits:
        if not any(s == name for s in split.values()):
            n = sum(r.split == name for r in rows)
            raise ConfigError(f"labels: none of the {n} {name} videos of the labels CSV is in the prepared data")
    return split


def probe(
    cfg: TrainConfig, data: PreparedData, labels_csv: str, checkpoint: str | None, *, actors: int = 1
) -> dict[str, float]:
    """Linear-probe top-1 per encoder; ``checkpoint=None`` probes random-init weights."""
    rows = read_labels_csv(labels_csv)
    split = labelled(rows, set(data.video_ids))
    label = label_of(rows)
    ids, feats = _video_features(cfg, data, split, checkpoint, actors)
    y = np.array([label[i] for i in ids])
    is_train = np.array([split[i] == "train" for i in ids])
    return {
        name: linear_probe_accuracy(x[is_train], y[is_train], x[~is_train], y[~is_train], cfg.seed)
        for name, x in sorted(feats.items())
    }


def cv_probe(
    cfg: TrainConfig, data: PreparedData, labels_csv: str, checkpoint: str | None, *, folds: int = 5, actors: int = 1
) -> dict[str, float]:
    """Linear-probe top-1 per encoder by ``folds``-fold cross-validation over every labelled
    video (the labels' split is ignored), averaged over folds. A video group (UCF101-style
    ``v_<class>_gGG_cCC``: clips of one recording) never spans two folds. On small sets this is
    the steadier number: one 48-video test split moves by ±0.1 between seeds."""
    rows = read_labels_csv(labels_csv)
    present = labelled(rows, set(data.video_ids), splits=())
    groups = {video_group(v) for v in present}
    if len(groups) < folds:
        raise ConfigError(f"--folds {folds}: the labels in {labels_csv} give {len(present)} prepared videos in {len(groups)} groups "
                          f"(clips of one recording stay in one fold); {folds}-fold cross-validation needs at least {folds}")
    label = {v: y for v, y in label_of(rows).items() if v in present}
    ids, feats = _video_features(cfg, data, label, checkpoint, actors)
    return fold_accuracies(feats, np.array([label[i] for i in ids]), [video_group(i) for i in ids], folds, cfg.seed, labels_csv)


def fold_accuracies(feats: dict[str, np.ndarray], y: np.ndarray, groups: list[str], folds: int, seed: int, labels_csv: str) -> dict[str, float]:
    """Mean linear-probe top-1 over grouped ``folds``-fold splits, per feature set; scikit-learn's
    refusals (e.g. a fold's train part with a single class) become a ConfigError naming
    ``--folds`` and the labels."""
    from sklearn.model_selection import GroupKFold

    try:
        splits = list(GroupKFold(folds).split(y, y, groups))
        return {
            name: float(np.mean([linear_probe_accuracy(x[tr], y[tr], x[te], y[te], seed) for tr, te in splits]))
            for name, x in sorted(feats.items())
        }
    except ValueError as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise ConfigError(f"--folds {folds}: cross-validation of the labels in {labels_csv} failed ({first}); lower --folds or label more videos per class") from None


def video_group(video_id: str) -> str:
    """The recording a video belongs to (UCF101-style ``v_<class>_gGG_cCC``: its ``_cCC`` cut off)."""
    return re.sub(r"_c\d+$", "", video_id)


def _video_features(cfg: TrainConfig, data: PreparedData, video_ids, checkpoint: str | None, actors: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Features of the given videos' clips (centre ``cfg.crop_size`` crops, as the run trained
    on), averaged per video (see :func:`video_average`)."""
    data = data.cropped(cfg.crop_size)
    keep = pa.table({"video_id": pa.array(sorted(video_ids), pa.string())})
    ds = data.decode(join_columns(data.dataset(clip_columns(cfg), crop=None), ["video_id"], keep))
    return video_average(extract_features(ds, cfg, method_module(cfg.method_name).build, data.specs, checkpoint, actors=actors))


def clip_columns(cfg: TrainConfig) -> list[str]:
    """The prepared columns a run of ``cfg`` reads, with the clip key."""
    return sorted(set(method_module(cfg.method_name).COLUMNS) | {"video_id", "clip_index"})


def finetune(
    cfg: TrainConfig,
    data: PreparedData,
    labels_csv: str,
    checkpoint: str | None,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 32,
) -> dict[str, float]:
    """Finetune each encoder with a new linear head on the train split (Adam, augmented clips);
    top-1 on the test split with clip softmax scores averaged per video. Clips are
    ``cfg.crop_size`` crops, as the run trained on."""
    data = data.cropped(cfg.crop_size)
    rows = read_labels_csv(labels_csv)
    split = labelled(rows, set(data.video_ids))
    classes = class_index(rows)
    ids = sorted(split)
    label = label_of(rows)
    table = pa.table({
        "video_id": pa.array(ids, pa.string()),
        "label": pa.array([label[i] for i in ids], pa.int64()),
        "video_index": pa.array(range(len(ids)), pa.int64()),
        "is_train": pa.array([split[i] == "train" for i in ids]),
    })
    clips = data.dataset(clip_columns(cfg), crop=None)  # only the labelled clips are decoded (centre crops)
    train_ds = data.decode(join_columns(clips, ["video_id"], table.filter(table["is_train"])))
    test_ds = data.decode(join_columns(clips, ["video_id"], table.filter(pc.invert(table["is_train"]))))
    collate = ClipCollate(data.specs)
    state = load_checkpoint_file(checkpoint)["model"] if checkpoint else None

    def fresh():
        torch.manual_seed(cfg.seed)
        m = method_module(cfg.method_name).build(cfg, data.specs)
        if state is not None:
            m.load_state_dict(state)
        return m

    probe_batch = next(iter(test_ds.iter_torch_batches(batch_size=2, collate_fn=collate)))
    with torch.no_grad():
        dims = {k: v.shape[1] for k, v in fresh().eval().embed(probe_batch).items()}
    results = {}
    for name, dim in sorted(dims.items()):
        model, head = fresh(), torch.nn.Linear(dim, len(classes))
        opt = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=lr)
        for _ in range(epochs):
            model.train()
            for b in train_ds.iter_torch_batches(batch_size=batch_size, collate_fn=collate, local_shuffle_buffer_size=4 * batch_size):
                loss = torch.nn.functional.cross_entropy(head(model.embed(b, train=True)[name]), b["label"])
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        scores = torch.zeros(len(ids), len(classes))
        with torch.no_grad():
            for b in test_ds.iter_torch_batches(batch_size=64, collate_fn=collate):
                scores.index_add_(0, b["video_index"], head(model.embed(b)[name]).softmax(1))
        y = torch.tensor([label[i] for i in ids])
        tested = torch.tensor([split[i] == "test" for i in ids])
        results[name] = float((scores.argmax(1) == y)[tested].float().mean())
    return results
