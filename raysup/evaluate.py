"""Linear probe of a run's encoders on labelled clips (frozen features averaged over each video's
clips; train/test from the labels CSV). Finetuning and the papers' own protocols are in
:mod:`raysup.protocols`. ``data`` is the prepared set read at the run's ``crop_size``
(:func:`raysup.runner.open_data`)."""
from __future__ import annotations

import re
import sys
import warnings

import numpy as np
import pyarrow as pa

from raysup.config import ConfigError, TrainConfig
from raysup.data.ingest import PreparedData
from raysup.data.labels import LabelRow, label_of, read_labels_csv
from raysup.data.tables import join_columns
from raysup.features import embed, video_means
from raysup.methods import method_module
from raysup.progress import dataset_progress


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


@dataset_progress("probe: features", "clips")
def _video_features(cfg: TrainConfig, data: PreparedData, video_ids, checkpoint: str | None, actors: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Features of the given videos' clips (centre crops), averaged per video inside Ray Data
    (:func:`raysup.features.video_means`): this process holds [videos, dim], never the clips."""
    keep = pa.table({"video_id": pa.array(sorted(video_ids), pa.string())})
    ds = data.decode(join_columns(data.dataset(clip_columns(cfg), crop=None), ["video_id"], keep), crop="centre")
    return video_means(embed(ds, cfg, method_module(cfg.method_name).build, data.specs, checkpoint, actors=actors))


def clip_columns(cfg: TrainConfig) -> list[str]:
    """The prepared columns a run of ``cfg`` reads, with the clip key."""
    return sorted(set(method_module(cfg.method_name).COLUMNS) | {"video_id", "clip_index"})
