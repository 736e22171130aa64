"""Linear probe and finetuning of a run's encoders on labelled clips (the papers' protocol:
frozen features averaged over each video's clips; train/test from the labels CSV)."""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import torch

from raysup.config import TrainConfig, to_dict
from raysup.data.ingest import ClipCollate, PreparedData
from raysup.data.tables import join_columns
from raysup.data.labels import LabelRow, read_labels_csv
from raysup.data.schema import TensorSpec


@dataclass(frozen=True)
class Features:
    """Per-clip features: ``video_id`` [N], ``clip_index`` [N], ``feats[name]`` [N,D]."""

    video_id: np.ndarray
    clip_index: np.ndarray
    feats: dict[str, np.ndarray]


class Embedder:
    """Ray Data actor: clip batches → features of every encoder of a (possibly untrained) model."""

    def __init__(self, config: dict, specs: dict, checkpoint: str | None):
        from raysup.methods import load_config, method_module
        from raysup.train import load_checkpoint_file

        cfg = load_config(config)
        self.specs = {k: TensorSpec.from_dict(v) for k, v in specs.items()}
        torch.manual_seed(cfg.seed)
        self.method = method_module(cfg.method_name).build(cfg, self.specs)
        if checkpoint is not None:
            self.method.load_state_dict(load_checkpoint_file(checkpoint)["model"])
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.method.to(self.device).eval()
        self.collate = ClipCollate(self.specs)

    @torch.no_grad()
    def __call__(self, batch: pa.Table) -> dict[str, np.ndarray]:
        tensors = {k: v.to(self.device) for k, v in self.collate(batch).items()}
        feats = self.method.embed(tensors, train=False)
        out = {"video_id": batch.column("video_id").to_numpy(zero_copy_only=False), "clip_index": tensors["clip_index"].cpu().numpy()}
        out.update({f"feat_{k}": v.float().cpu().numpy() for k, v in feats.items()})
        return out


def extract_features(
    ds, cfg: TrainConfig, specs: dict[str, TensorSpec], checkpoint: str | None, *, actors: int = 1, batch_size: int = 64
) -> Features:
    """Features of every clip in ``ds`` as a Ray Data ``map_batches`` over an actor pool
    (one GPU per actor when the cluster has GPUs)."""
    import ray

    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    out = ds.map_batches(
        Embedder,
        fn_constructor_kwargs={"config": to_dict(cfg), "specs": {k: v.to_dict() for k, v in specs.items()}, "checkpoint": checkpoint},
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=gpus,
        num_cpus=1,
    )
    parts = list(out.iter_batches(batch_format="numpy", batch_size=None))
    if not parts:
        raise ValueError("no clips to extract features from")
    names = [k[5:] for k in parts[0] if k.startswith("feat_")]
    vid = np.concatenate([p["video_id"] for p in parts]).astype(str)
    clip = np.concatenate([p["clip_index"] for p in parts])
    order = np.lexsort((clip, vid))  # deterministic order: by video, then clip
    feats = {n: np.concatenate([p[f"feat_{n}"] for p in parts])[order] for n in names}
    return Features(vid[order], clip[order], feats)


def video_average(f: Features) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Average clip features per video → (video ids [V], {name: [V,D]})."""
    ids, inverse = np.unique(f.video_id, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(ids))[:, None]
    out = {}
    for name, x in f.feats.items():
        acc = np.zeros((len(ids), x.shape[1]), np.float64)
        np.add.at(acc, inverse, x)
        out[name] = (acc / counts).astype(np.float32)
    return ids, out


def linear_probe_accuracy(x_train, y_train, x_test, y_test, seed: int = 0) -> float:
    """Top-1 of an L2-regularised logistic regression on standardised features
    (regularisation chosen by 3-fold cross-validation on the train split)."""
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
    return float((clf.predict(x_test) == y_test).mean())


def labelled(rows: list[LabelRow], present: set[str]) -> tuple[dict[str, int], dict[str, str]]:
    """(class index by name, split by video) for the labelled videos that were prepared."""
    classes = {c: i for i, c in enumerate(sorted({r.label for r in rows}))}
    split = {r.video_id: r.split for r in rows if r.video_id in present}
    if not any(s == "train" for s in split.values()) or not any(s == "test" for s in split.values()):
        raise ValueError("labels: need prepared videos in both the train and the test split")
    return classes, split


def probe(
    cfg: TrainConfig, data: PreparedData, labels_csv: str, checkpoint: str | None, *, actors: int = 1
) -> dict[str, float]:
    """Linear-probe top-1 per encoder; ``checkpoint=None`` probes random-init weights."""
    rows = read_labels_csv(labels_csv)
    classes, split = labelled(rows, set(data.video_ids))
    label = {r.video_id: classes[r.label] for r in rows}
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
    from sklearn.model_selection import GroupKFold

    rows = read_labels_csv(labels_csv)
    classes = {c: i for i, c in enumerate(sorted({r.label for r in rows}))}
    prepared = set(data.video_ids)
    label = {r.video_id: classes[r.label] for r in rows if r.video_id in prepared}
    ids, feats = _video_features(cfg, data, label, checkpoint, actors)
    y = np.array([label[i] for i in ids])
    groups = [re.sub(r"_c\d+$", "", i) for i in ids]
    splits = list(GroupKFold(folds).split(ids, y, groups))
    return {
        name: float(np.mean([linear_probe_accuracy(x[tr], y[tr], x[te], y[te], cfg.seed) for tr, te in splits]))
        for name, x in sorted(feats.items())
    }


def _video_features(cfg: TrainConfig, data: PreparedData, video_ids, checkpoint: str | None, actors: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Features of the given videos' clips, averaged per video (see :func:`video_average`)."""
    keep = pa.table({"video_id": pa.array(sorted(video_ids), pa.string())})
    ds = join_columns(data.dataset(_columns(cfg)), ["video_id"], keep)
    return video_average(extract_features(ds, cfg, data.specs, checkpoint, actors=actors))


def _columns(cfg: TrainConfig) -> list[str]:
    from raysup.methods import method_module

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
    top-1 on the test split with clip softmax scores averaged per video."""
    from raysup.methods import method_module
    from raysup.train import load_checkpoint_file

    rows = read_labels_csv(labels_csv)
    classes, split = labelled(rows, set(data.video_ids))
    ids = sorted(split)
    label = {r.video_id: classes[r.label] for r in rows}
    table = pa.table({
        "video_id": pa.array(ids, pa.string()),
        "label": pa.array([label[i] for i in ids], pa.int64()),
        "video_index": pa.array(range(len(ids)), pa.int64()),
        "is_train": pa.array([split[i] == "train" for i in ids]),
    })
    train_ds = join_columns(data.dataset(_columns(cfg)), ["video_id"], table.filter(table["is_train"]))
    test_ds = join_columns(data.dataset(_columns(cfg)), ["video_id"], table.filter(pa.compute.invert(table["is_train"])))
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
