"""Run the papers' own evaluation protocols (``raysup probe --protocol paper``), declared by each
method module as ``PAPER_PROTOCOLS`` (:mod:`raysup.protocol_specs`: what each kind is), and the
plain finetuning of ``raysup probe --finetune``: every finetuning goes through
:func:`raysup.train.fit` (GPU, DDP, AMP, checkpoints, resume). Sources of the protocols' values:
the method files and docs/reproducing.md.
"""
from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF

from raysup.checkpoint import latest_checkpoint, load_checkpoint_file
from raysup.cluster_features import parquet_files
from raysup.config import ConfigError, OptimConfig, TrainConfig
from raysup.data.ingest import ClipCollate, PreparedData
from raysup.data.labels import class_index, label_of, read_labels_csv
from raysup.data.storage import exists, join, read_json, redact, resolve, write_json
from raysup.data.tables import join_columns, repeat_rows
from raysup.data.transforms import random_resized_crop_flip, standardize
from raysup.evaluate import clip_columns, labelled
from raysup.features import embed, write_features
from raysup.methods import method_module, method_names
from raysup.methods.base import Method
from raysup.methods.cross_and_learn import stack_channels, stack_input
from raysup.models import image_encoder
from raysup.protocol_specs import DOWNSTREAM_CLASSES, FinetuneProtocol, FrozenProtocol, LayerProbeProtocol, LinearLayer, Protocol, epoch_clips
from raysup.train import fit
from raysup.video_sums import matrix, vector_columns

Classifier = Literal["linear", "svm"]
MAX_DRAWS_PER_CLIP = 100  # a finetuning epoch's clips over the train clips: more is a paper epoch size on far too little data


# --- networks the protocols train or read --------------------------------------------------------


class Finetune(Method):
    """A method's model with a new linear head on one of its encoders. With ``full`` the
    encoder's network (:meth:`Method.encoders`) is trained end to end with the head; without,
    only the head is (fc-only: the method stays in eval mode, BN statistics included). The
    method's other parameters are frozen (so DDP sees no unused ones)."""

    def __init__(self, inner: Method, encoder: str, full: bool, classes: int):
        super().__init__()
        network, dim = inner.encoders()[encoder]
        self.inner, self.encoder, self.frozen = inner, encoder, not full
        self.head = nn.Linear(dim, classes)
        trained = {id(p) for p in network.parameters()} if full else set()
        for p in inner.parameters():
            p.requires_grad_(id(p) in trained)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.inner.eval()
        return self

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.inner.embed(batch, train=self.training)[self.encoder])  # [B,classes]

    def forward(self, batch):
        return classification(self.logits(batch), batch["label"])

    def load_pretrained(self, state: dict[str, torch.Tensor]) -> None:
        """The pretrained run's weights into the method; the head starts fresh."""
        self.inner.load_state_dict(state)


def classification(logits: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cross-entropy loss and top-1 of logits [B,C] for labels [B]."""
    return {"loss": F.cross_entropy(logits.float(), label), "acc": (logits.argmax(1) == label).float().mean()}


def build_finetune(cfg: TrainConfig, specs, *, encoder: str, full: bool, classes: int) -> Finetune:
    return Finetune(method_module(cfg.method_name).build(cfg, specs), encoder, full, classes)


class CaffeNetClassifier(Method):
    """Cross and Learn §4's finetuning network: a fresh CaffeNet (the run's ``method.encoder``)
    with ``channels`` inputs whose conv and BN layers start from the run's network under
    ``init_prefix`` and whose FC layers start from scratch: dropout → fc6 → ReLU → dropout → fc7
    → ReLU → fc8 (the official ``Net_ar``). Input: ``inputs(batch, train=...)`` [B,channels,S,S];
    by default one RGB frame of the clip (:func:`rgb_input`)."""

    def __init__(self, encoder: str, size: int, classes: int, init_prefix: str, channels: int = 3, inputs: Callable | None = None):
        super().__init__()
        net = image_encoder(encoder, channels)
        self.init_prefix, self.inputs = init_prefix, inputs or functools.partial(rgb_input, size=size)
        fc6 = next(m for m in net.fc6 if isinstance(m, nn.Linear))
        self.features, d = net.features, net.out_dim
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.5), nn.Linear(fc6.in_features, d), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, classes),
        )  # fmt: skip

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.features(self.inputs(batch, train=self.training)))  # [B,classes]

    def forward(self, batch):
        return classification(self.logits(batch), batch["label"])

    def load_pretrained(self, state: dict[str, torch.Tensor]) -> None:
        """Conv and BN layers from the pretrained network under ``init_prefix``; FC layers stay fresh."""
        prefix = self.init_prefix
        self.features.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


def build_caffenet(cfg: TrainConfig, specs, *, classes: int, init_prefix: str, stream: str = "rgb") -> CaffeNetClassifier:
    """The CaffeNet of the run's ``stream``: ``rgb``, or the motion network (``flow``, ``diff``)
    fed the pretraining's stack (:func:`raysup.methods.cross_and_learn.stack_input`)."""
    size = specs["frames"].shape[1]  # the stream's crop (crop_size)
    if stream == "rgb":
        return CaffeNetClassifier(cfg.method.encoder, size, classes, init_prefix)
    inputs = functools.partial(stack_input, cfg=cfg.method, size=size)
    return CaffeNetClassifier(cfg.method.encoder, size, classes, init_prefix, stack_channels(cfg.method, stream), inputs)


def rgb_input(batch: dict[str, torch.Tensor], *, size: int, train: bool) -> torch.Tensor:
    """The RGB CaffeNet's input: :func:`rgb_frame` of the clip."""
    return rgb_frame(batch["frames"], size, train=train)


def rgb_frame(frames: torch.Tensor, size: int, *, train: bool) -> torch.Tensor:
    """uint8 clips [B,T,H,W,3] → one standardised frame each [B,3,S,S]: a random frame, random
    S×S crop (no rescaling) and flip when ``train``, else the centre frame and crop."""
    b, t, h, w, _ = frames.shape
    pick = torch.randint(0, t, (b,), device=frames.device) if train else torch.full((b,), t // 2, device=frames.device)
    x = frames[torch.arange(b, device=frames.device), pick].permute(0, 3, 1, 2).float() / 255  # [B,3,H,W]
    if train:
        area = size * size / (h * w)
        x = random_resized_crop_flip(x, (area, area), size=(size, size), ratio=(1.0, 1.0))
    else:
        x = TF.center_crop(x, [size, size])
    return standardize(x, (1, 2, 3))


class TapFeatures(Method):
    """The frozen features a protocol reads: the method's taps (:meth:`Method.taps`), each
    resized bilinearly to s×s when ``sides`` gives s (Caffe's Interp layer of Zhang et al.'s
    test maps corner to corner: ``align_corners=True``), flattened; keyed by result name. Loads
    the method's state dict as is."""

    def __init__(self, inner: Method, taps: dict[str, tuple[str, int]]):
        super().__init__()
        self.inner, self.taps_of = inner, taps  # result key → (tap, side; 0: as is)

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        return self.inner.load_state_dict(state, strict, assign)

    def embed(self, batch, *, train=False):
        taps = self.inner.taps(batch)
        out = {}
        for key, (tap, side) in self.taps_of.items():
            x = taps[tap]
            if side:
                x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=True)
            out[key] = x.flatten(1)
        return out


def build_tap_features(cfg: TrainConfig, specs, *, taps: dict[str, tuple[str, int]]) -> TapFeatures:
    return TapFeatures(method_module(cfg.method_name).build(cfg, specs), taps)


def protocol_taps(p: FrozenProtocol | LayerProbeProtocol) -> dict[str, tuple[str, int]]:
    """Result key → (tap, side) of a frozen protocol."""
    if isinstance(p, FrozenProtocol):
        return {p.key: (p.tap, 0)}
    return {tap: (tap, side) for tap, side in p.sizes}


def paper_protocols(method_name: str, task: str | None = "action") -> tuple[Protocol, ...]:
    """The method's ``PAPER_PROTOCOLS`` for ``task`` (None: all); a one-line ConfigError for a
    method without any, or without any for ``task``."""
    protocols = getattr(method_module(method_name), "PAPER_PROTOCOLS", ())
    if not protocols:
        having = [m for m in method_names() if getattr(method_module(m), "PAPER_PROTOCOLS", ())]
        raise ConfigError(f"--protocol paper: not implemented for {method_name} (only {', '.join(having)}); use --protocol linear")
    picked = tuple(p for p in protocols if task is None or p.task == task)
    if not picked:
        tasks = sorted({p.task for p in protocols})
        raise ConfigError(f"--paper-task: {method_name}'s paper protocols are for {', '.join(tasks)}, not {task}")
    return picked


def model_protocols(protocols: tuple[Protocol, ...], cfg: TrainConfig, specs) -> tuple[Protocol, ...]:
    """``protocols`` less the finetunings of an encoder the run's model lacks: a Cross and Learn
    run has one motion network, ``flow`` or ``diff`` (``method.modality``)."""
    encoders = set(method_module(cfg.method_name).build(cfg, specs).encoders())
    return tuple(p for p in protocols if not isinstance(p, FinetuneProtocol) or p.encoder in encoders)


def finetune_protocols(cfg: TrainConfig, data: PreparedData, *, epochs: int = 10, lr: float = 1e-3, batch_size: int = 32) -> tuple[FinetuneProtocol, ...]:
    """``raysup probe --finetune``: every encoder of the method finetuned end to end with a new
    linear head (Adam, the stream's random crops and the method's training augmentation), softmax
    scores averaged over every clip of a test video."""
    names = sorted(method_module(cfg.method_name).build(cfg, data.specs).encoders())
    optim = OptimConfig(name="adam", lr=lr, weight_decay=0.0, schedule="constant")
    return tuple(FinetuneProtocol(key=n, encoder=n, full=True, optim=optim, epochs=epochs, batch_size=batch_size, test_clips=0) for n in names)


def run_protocols(
    cfg: TrainConfig,
    data: PreparedData,
    labels_csv: str,
    checkpoint: str | None,
    out_dir: str,
    protocols: tuple[Protocol, ...],
    *,
    epochs: int | None = None,
    clips_per_epoch: int | None = None,
    classifier: Classifier = "linear",
    actors: int = 1,
) -> dict[str, float]:
    """Run ``protocols`` (e.g. :func:`paper_protocols`) on the run's weights and return test top-1
    per result key. A finetuning runs as a :func:`raysup.train.fit` run in ``out_dir/<key>``
    (rerunning resumes it); ``epochs`` overrides a finetuning's epochs (the schedule's milestones
    are fractions of it), ``clips_per_epoch`` its epoch size (0: one pass over the train clips;
    None: the protocol's for the labels' set, :func:`raysup.protocol_specs.epoch_clips`); ``classifier`` picks a frozen protocol's classifier (``linear``: ESC-50's,
    ``svm``: DCASE's). ``checkpoint=None``: random-init weights. ``data`` is read at the run's
    ``crop_size`` (random crops to finetune, centred to test and for frozen features)."""
    rows = read_labels_csv(labels_csv)
    split = labelled(rows, set(data.video_ids))
    classes, label = class_index(rows), label_of(rows)
    ids = sorted(split)
    counts = data.video_clips
    n_test = max(p.test_clips or max(counts.values()) for p in protocols)  # 0: every clip
    test_clips = {v: np.unique(np.linspace(0, counts[v] - 1, min(counts[v], n_test)).round().astype(np.int64)) for v in ids if split[v] == "test"}
    train_ids = [v for v in ids if split[v] == "train"]
    train_table = pa.table({"video_id": pa.array(train_ids, pa.string()), "label": pa.array([label[v] for v in train_ids], pa.int64())})
    test_table = pa.table({
        "video_id": pa.array([v for v, c in test_clips.items() for _ in c], pa.string()),
        "clip_index": pa.array(np.concatenate(list(test_clips.values())), pa.int32()),  # the prepared column's type
        "video_index": pa.array(np.searchsorted(ids, [v for v, c in test_clips.items() for _ in c]), pa.int64()),  # ids are sorted
    })
    clips = data.dataset(clip_columns(cfg), crop=None)  # decoded after the join: random crops to train, centre to test
    shuffled = data.dataset(clip_columns(cfg), crop=None, shuffle=cfg.seed)  # finetuning: another file order every epoch
    train_clips = join_columns(shuffled, ["video_id"], train_table)
    test_ds = data.decode(join_columns(clips, ["video_id", "clip_index"], test_table), crop="centre")
    frozen_train_ds = data.decode(join_columns(clips, ["video_id"], train_table), crop="centre")  # frozen features: centre crops
    y = np.array([label[v] for v in ids])  # [V] by video index
    tested = np.array([v in test_clips for v in ids])
    results = {}
    for p in protocols:
        if isinstance(p, FinetuneProtocol):
            n = epoch_size(p, len(classes), clips_per_epoch)
            train_ds, rows_per_epoch = finetune_epochs(train_clips, sum(counts[v] for v in train_ids), n, p.key)
            scores, video = run_finetune(p, data.decode(train_ds, crop="random"), test_ds, out_dir, cfg=cfg, data=data, checkpoint=checkpoint,
                                         classes=len(classes), rows_per_epoch=rows_per_epoch, epochs=epochs)
            results[p.key] = video_accuracy(scores, video, y, tested)
        else:
            results.update(run_frozen(p, frozen_train_ds, test_ds, join(out_dir, "features"), cfg=cfg, data=data, checkpoint=checkpoint,
                                      classifier=classifier, ids=ids, y=y, tested=tested, classes=len(classes), actors=actors))
    return results


def epoch_size(p: FinetuneProtocol, classes: int, clips_per_epoch: int | None) -> int:
    """Clips per finetuning epoch (0: one pass over the train clips): ``clips_per_epoch`` if
    given, else the protocol's for a labels CSV of ``classes`` classes
    (:func:`raysup.protocol_specs.epoch_clips`); a protocol without one for them says so on stderr."""
    if clips_per_epoch is not None:
        return clips_per_epoch
    n = epoch_clips(p, classes)
    if p.epoch_clips and not n:
        sets = ", ".join(f"{name} ({DOWNSTREAM_CLASSES[name]} classes): {n}" for name, n in p.epoch_clips)
        print(f"{p.key}: one pass over the train clips per epoch; the paper's epoch sizes are for {sets}, not {classes} classes "
              "(--paper-epoch-clips N sets one)", file=sys.stderr)
    return n


def finetune_epochs(train_clips, rows: int, clips: int, key: str):
    """(the finetuning stream, clips per epoch): the ``rows`` train clips once per epoch
    (``clips`` 0), or epochs of ``clips`` clips on average, each train clip repeated a random
    number of times (mean clips / rows, every epoch anew: :func:`raysup.data.tables.repeat_rows`)
    before its random crop; ``key``: the protocol's, for errors."""
    if clips < 0:
        raise ConfigError(f"--paper-epoch-clips: must be >= 0 (0: one pass over the train clips), got {clips}")
    if not clips:
        return train_clips, rows
    if clips > MAX_DRAWS_PER_CLIP * rows:
        raise ConfigError(f"--paper-epoch-clips: {key}'s {clips} clips per epoch would draw each of the {rows} train clips "
                          f"~{clips // rows} times; at most {MAX_DRAWS_PER_CLIP}: give fewer (0: one pass over the train clips)")
    return train_clips.map_batches(repeat_rows, fn_kwargs={"rate": clips / rows}, batch_format="pyarrow"), clips


def keep_epoch_size(run_dir: str, clips: int) -> None:
    """A finetuning resumes only with the clips per epoch it started with (its schedule's steps
    and its data position count in them): recorded in ``run_dir/epoch_size.json``, a change
    (e.g. another ``--paper-epoch-clips``) is a ConfigError naming the folder."""
    fs, root = resolve(run_dir)
    path = f"{root}/epoch_size.json"
    if not exists(fs, path):
        fs.create_dir(root, recursive=True)
        write_json(fs, path, {"clips_per_epoch": clips})
    elif (was := read_json(fs, path)["clips_per_epoch"]) != clips:
        raise ConfigError(f"--paper-epoch-clips: {redact(run_dir)} was finetuned with {was} clips per epoch, now {clips}; "
                          "give another --out to finetune anew")


def run_finetune(p: FinetuneProtocol, train_ds, test_ds, out_dir: str, *, cfg: TrainConfig, data: PreparedData, checkpoint: str | None,
                 classes: int, rows_per_epoch: int, epochs: int | None) -> tuple[np.ndarray, np.ndarray]:
    """One finetuning: :func:`raysup.train.fit` in ``out_dir/<key>`` from ``checkpoint``, then the
    softmax scores of the test clips [N,classes] and their video indices [N]."""
    if p.network == "caffenet":
        build = functools.partial(build_caffenet, classes=classes, init_prefix=p.init_prefix, stream=p.encoder)
    else:
        build = functools.partial(build_finetune, encoder=p.encoder, full=p.full, classes=classes)
    ft_cfg = dataclasses.replace(cfg, optim=p.optim, epochs=epochs or p.epochs, batch_size=p.batch_size, max_steps=0, patience=0)
    run_dir = f"{out_dir.rstrip('/')}/{p.key}"
    keep_epoch_size(run_dir, rows_per_epoch)
    fit(ft_cfg, build, {"train": train_ds}, run_dir, data.specs, rows_per_epoch=rows_per_epoch, resume=True, init_checkpoint=checkpoint)
    model = build(ft_cfg, data.specs)
    model.load_state_dict(load_checkpoint_file(latest_checkpoint(run_dir))["model"])
    model.eval()
    scores, video = [], []
    with torch.no_grad():
        for b in test_ds.iter_torch_batches(batch_size=64, collate_fn=ClipCollate(data.specs)):
            scores.append(model.logits(b).float().softmax(1).numpy())
            video.append(b["video_index"].numpy())
    return np.concatenate(scores), np.concatenate(video)


# --- frozen protocols: classifiers trained from the train clips' features on disk ----------------

Scorer = Callable[[np.ndarray], np.ndarray]  # features [N,D] → class scores [N,classes]
Norm = tuple[np.ndarray, np.ndarray]  # a feature's mean and deviation [D]
CLIP_KEY = ("video_id", "clip_index")
SHUFFLE_BYTES = 512 * 1024**2  # a stream shuffles together the rows of up to 2 × this


def run_frozen(p: FrozenProtocol | LayerProbeProtocol, train_ds, test_ds, folder: str, *, cfg: TrainConfig, data: PreparedData,
               checkpoint: str | None, classifier: Classifier, ids: list[str], y: np.ndarray, tested: np.ndarray, classes: int,
               actors: int) -> dict[str, float]:
    """A frozen protocol: the train clips' features written to Parquet in ``folder``
    (:func:`raysup.features.write_features`, removed when done), a classifier per feature trained
    from them (:func:`frozen_classifiers`), then the test clips' features streamed through it and
    their scores summed per test video. This process holds [videos, classes] and a few batches,
    never the clips. Returns top-1 per result key."""
    build = functools.partial(build_tap_features, taps=protocol_taps(p))
    fs, root = resolve(folder)
    if exists(fs, root):  # a killed run's features
        fs.delete_dir(root)
    write_features(train_ds, folder, cfg, build, data.specs, checkpoint, actors=actors)
    classify = frozen_classifiers(p, classifier, FeatureStream(folder, ids, y), classes, cfg.seed)
    video_of = pa.array(ids, pa.string())
    totals = {name: np.zeros((len(ids), classes)) for name in classify}
    for batch in embed(test_ds, cfg, build, data.specs, checkpoint, actors=actors).iter_batches(batch_format="pyarrow", batch_size=None):
        video = pc.index_in(batch.column("video_id"), value_set=video_of).to_numpy()
        for name, score in classify.items():
            np.add.at(totals[name], video, score(matrix(batch.column(name))))
    fs.delete_dir(root)
    return {name: video_top1(total, y, tested) for name, total in totals.items()}


class FeatureStream:
    """Clip features as :func:`raysup.features.write_features` wrote them in ``folder``, read
    back a Parquet batch at a time, each clip labelled ``y`` [V] of its video (``ids``, sorted);
    ``shuffle_bytes``: how much an epoch's shuffle holds (:meth:`batches`)."""

    def __init__(self, folder: str, ids: list[str], y: np.ndarray, *, shuffle_bytes: int = SHUFFLE_BYTES):
        self.fs, _ = resolve(folder)
        self.files = parquet_files(folder)
        if not self.files:
            raise ValueError("no clips to extract features from")
        schema = pq.read_schema(self.files[0], filesystem=self.fs)
        self.names = vector_columns(schema)
        self.dims = {n: schema.field(n).type.list_size for n in self.names}
        self.video_of, self.y, self.shuffle_bytes = pa.array(ids, pa.string()), y, shuffle_bytes

    def tables(self, order) -> Iterator[pa.Table]:
        """The files' rows in ``order`` of the files, one record batch at a time."""
        for i in order:
            with self.fs.open_input_file(self.files[i]) as f:
                for b in pq.ParquetFile(f).iter_batches(columns=[*CLIP_KEY, *self.names]):
                    yield pa.Table.from_batches([b])

    def labels(self, table: pa.Table) -> np.ndarray:
        return self.y[pc.index_in(table.column("video_id"), value_set=self.video_of).to_numpy()]

    def batches(self, batch_size: int, g: torch.Generator) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """One epoch of (features {name: [B,D]}, labels [B]) batches: the files in random order, their
        rows shuffled together up to 2 × ``shuffle_bytes`` at a time, 1 × held over (every row
        when they fit, as an in-memory permutation does). Rows are put in clip order before each
        shuffle, so the batches do not depend on how Ray Data cut the files when they all fit."""
        files, rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=g))).spawn(2)  # rows' draws apart from the files'
        keep = max(batch_size, self.shuffle_bytes // (4 * sum(self.dims.values())))
        held, rows = [], 0
        for t in self.tables(files.permutation(len(self.files))):
            held.append(t)
            rows += t.num_rows
            if rows >= 2 * keep:
                pool = in_clip_order(held).take(rng.permutation(rows))
                n = (rows - keep) // batch_size * batch_size
                yield from self.slices(pool.slice(0, n), batch_size)
                held, rows = [pool.slice(n)], rows - n
        if rows:
            yield from self.slices(in_clip_order(held).take(rng.permutation(rows)), batch_size)

    def slices(self, table: pa.Table, batch_size: int):
        for s in range(0, table.num_rows, batch_size):
            t = table.slice(s, batch_size)
            yield {n: torch.tensor(matrix(t.column(n))) for n in self.names}, torch.from_numpy(self.labels(t)).long()

    def standardization(self) -> dict[str, Norm]:
        """Each feature's mean and deviation (+1e-5) over every clip, merged batch by batch in
        float64 (Chan et al.'s pairwise update)."""
        n, mean, m2 = 0, dict.fromkeys(self.names, 0.0), dict.fromkeys(self.names, 0.0)
        for t in self.tables(range(len(self.files))):
            k = t.num_rows
            for name in self.names:
                x = matrix(t.column(name), np.float64)
                bm = x.mean(0)
                delta = bm - mean[name]
                mean[name] = mean[name] + delta * k / (n + k)
                m2[name] = m2[name] + ((x - bm) ** 2).sum(0) + delta**2 * n * k / (n + k)
            n += k
        return {name: (mean[name].astype(np.float32), (np.sqrt(m2[name] / n) + 1e-5).astype(np.float32)) for name in self.names}

    def read(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Every clip's features and label, in memory, in clip order."""
        table = in_clip_order(self.tables(range(len(self.files))))
        return {n: matrix(table.column(n)) for n in self.names}, self.labels(table)


def in_clip_order(tables) -> pa.Table:
    """Feature tables as one, sorted by video, then clip."""
    return pa.concat_tables(tables).sort_by([(k, "ascending") for k in CLIP_KEY])


def frozen_classifiers(p: FrozenProtocol | LayerProbeProtocol, classifier: Classifier, stream: FeatureStream, classes: int,
                       seed: int) -> dict[str, Scorer]:
    """Per feature of ``stream``, the protocol's classifier trained on the train clips: its linear
    layers (softmax probabilities) trained from the stream, a few batches held at a time; or GDT's
    SVM for audio (``classifier="svm"``: decision scores), which scikit-learn's ``LinearSVC`` fits
    on every clip at once: DCASE2014's 100 recordings × 60 sub-clips (papers/gdt.md L162-164)."""
    if isinstance(p, FrozenProtocol) and classifier == "svm":
        x, y = stream.read()
        return {name: svm_scorer(p.svm_c, x[name], y, classes, seed) for name in stream.names}
    norms = stream.standardization() if p.linear.standardize else {}
    layers = train_linear(functools.partial(stream.batches, p.linear.batch_size), stream.dims, classes, p.linear, norms, seed=seed)
    return {name: linear_scorer(layer, norms.get(name)) for name, layer in layers.items()}


def frozen_scores(p: FrozenProtocol | LayerProbeProtocol, classifier: Classifier, x_train: np.ndarray, y_train: np.ndarray,
                  x_test: np.ndarray, classes: int, seed: int) -> np.ndarray:
    """What :func:`frozen_classifiers` does from a stream, on train clips held in memory (the
    reference its tests compare with): class scores [N_test,classes] of the test clips."""
    if isinstance(p, FrozenProtocol) and classifier == "svm":
        return svm_scorer(p.svm_c, x_train, y_train, classes, seed)(x_test)
    norms = {"x": (x_train.mean(0), x_train.std(0) + 1e-5)} if p.linear.standardize else {}
    xt, yt = torch.from_numpy(x_train).float(), torch.from_numpy(y_train).long()

    def batches(g):
        return (({"x": xt[i]}, yt[i]) for i in torch.randperm(len(yt), generator=g).split(p.linear.batch_size))

    layer = train_linear(batches, {"x": xt.shape[1]}, classes, p.linear, norms, seed=seed)["x"]
    return linear_scorer(layer, norms.get("x"))(x_test)


def svm_scorer(c: float, x: np.ndarray, y: np.ndarray, classes: int, seed: int) -> Scorer:
    """GDT's DCASE classifier (official ``src/svm.py``): a one-vs-rest ``LinearSVC(C=c)``; its
    decision scores, -inf for classes absent from training."""
    from sklearn.svm import LinearSVC

    svm = LinearSVC(C=c, random_state=seed).fit(x, y)

    def score(x_test: np.ndarray) -> np.ndarray:
        scores = svm.decision_function(x_test)
        if scores.ndim == 1:  # two classes: one column, positive for classes_[1]
            scores = np.stack([-scores, scores], 1)
        return expand_columns(scores, svm.classes_, classes, fill=-np.inf)

    return score


def linear_scorer(layer: nn.Linear, norm: Norm | None) -> Scorer:
    """Softmax probabilities of a trained layer on features standardised by ``norm``."""

    def score(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return layer(normalized(torch.tensor(x, dtype=torch.float32), norm)).softmax(1).numpy()

    return score


def normalized(x: torch.Tensor, norm: Norm | None) -> torch.Tensor:
    """x [N,D] standardised by ``norm`` (a batch norm without learned parameters at its running
    statistics: Zhang et al.'s linear test, papers/cpfs.md L236); as is without one."""
    if norm is None:
        return x
    mean, std = (torch.as_tensor(a, dtype=torch.float32) for a in norm)
    return (x - mean) / std


def expand_columns(scores: np.ndarray, present: np.ndarray, classes: int, fill: float = 0.0) -> np.ndarray:
    """Scores [N,len(present)] for the classes seen in training → [N,classes] (others ``fill``)."""
    out = np.full((scores.shape[0], classes), fill, np.float64)
    out[:, present] = scores
    return out


def train_linear(batches: Callable[[torch.Generator], Iterable], dims: dict[str, int], classes: int, spec: LinearLayer,
                 norms: dict[str, Norm], *, seed: int) -> dict[str, nn.Linear]:
    """One linear layer per feature, [N,D] → [N,classes], trained by cross-entropy as ``spec`` says,
    all on the same batches: ``batches(g)`` yields one epoch's (features {name: [B,D]}, labels [B])
    shuffled by the generator ``g``; each feature standardised by its ``norms`` entry first."""
    g = torch.Generator().manual_seed(seed)
    layers, steps = {}, []
    for name, dim in dims.items():
        torch.manual_seed(seed)  # every layer starts as it would alone
        layers[name] = nn.Linear(dim, classes)
        if spec.optimizer == "sgd":
            opt = torch.optim.SGD(layers[name].parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
        else:
            opt = torch.optim.Adam(layers[name].parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
        steps.append((name, opt, torch.optim.lr_scheduler.MultiStepLR(opt, [round(f * spec.epochs) for f in spec.milestones], spec.gamma)))
    for _ in range(spec.epochs):
        for x, y in batches(g):
            for name, opt, _ in steps:
                loss = F.cross_entropy(layers[name](normalized(x[name], norms.get(name))), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
        for _, _, schedule in steps:
            schedule.step()
    return layers


def video_top1(total: np.ndarray, y: np.ndarray, tested: np.ndarray) -> float:
    """Top-1 over the tested videos of scores summed per video [V,C] (``y`` [V]: their labels)."""
    return float((total.argmax(1) == y)[tested].mean())


def video_accuracy(scores: np.ndarray, video: np.ndarray, y: np.ndarray, tested: np.ndarray) -> float:
    """Top-1 over the tested videos of clip scores [N,C] summed per video (``video`` [N] indexes
    ``y`` [V], the videos' labels)."""
    total = np.zeros((len(y), scores.shape[1]))
    np.add.at(total, video, scores)
    return video_top1(total, y, tested)
