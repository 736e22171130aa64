"""XDC: cross-modal deep clustering (Alwassel et al. 2020), with the SDC/MDC/CDC baselines and
the same-modality-XDC ones (``xdc_2video``, ``xdc_2audio``: two encoders of one modality, each
learning the other's clusters; papers/xdc.md L105-115).

Each round (DeepCluster, Caron et al. 2018, where the XDC paper is silent):
1. features of every clip from the current encoders (Ray Data ``map_batches`` actor pool),
   written as Parquet to the run folder (:func:`raysup.features.write_features`);
2. k-means pseudo-labels (:func:`raysup.cluster_features.cluster_features`: centroids trained
   on a sample in one faiss Ray task, every clip assigned by ``map_batches``, labels as Parquet;
   :data:`raysup.clustering.HEADS` decides which modality's clusters supervise which encoder;
   each clustering has its own k: ``method.k_video``, ``method.k_audio``, else ``method.k``);
3. the labels are joined to the clips as they stream (each batch reads its own shards' labels),
   clips are resampled uniformly over clusters (an epoch: ``method.epoch_clips`` clips, or
   ``epoch_size`` × the training clips),
   10% of videos are held out for the pseudo-label validation loss;
4. the classification heads are reset and a TorchTrainer trains until the validation loss
   stops improving (``patience``) or ``epochs``; the next round starts from its checkpoint.
Clips of videos without audio are left out (their audio clusters would be noise).
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import pyarrow.fs as pafs
import torch
import torch.nn.functional as F
from ray.data.expressions import col
from torch import nn

from raysup.checkpoint import latest_checkpoint
from raysup.cluster_features import STATS, Clustering, Labels, cluster_features, draw_rates, round_rows
from raysup.clustering import CLUSTERINGS, HEADS, KMeansConfig
from raysup.config import ConfigError, OptimConfig, TrainConfig
from raysup.data.ingest import PreparedData
from raysup.data.labels import label_of, read_labels_csv
from raysup.data.storage import exists, join, read_json, redact, resolve, write_json
from raysup.data.transforms import audio_input, check_crop_scale, video_input
from raysup.features import write_features
from raysup.methods.base import Encoder, Method, Stage, StageLog, audio_visual_embed, check_batch, train_split
from raysup.models import audio_encoder, video_encoder
from raysup.protocol_specs import AudioClipsProtocol, FinetuneProtocol


@dataclass(frozen=True)
class Config:
    variant: Literal["xdc", "sdc", "mdc", "cdc", "xdc_2video", "xdc_2audio"] = "xdc"
    k: int = 64  # clusters of each clustering without its own k below
    k_video: int = 0  # clusters of the video features (XDC: the audio encoder's pseudo-labels); 0: k
    k_audio: int = 0  # clusters of the audio features (XDC: the video encoder's pseudo-labels); 0: k
    rounds: int = 3  # clustering rounds; each trains for up to TrainConfig.epochs
    niter: int = 20  # k-means iterations
    sample: int = 0  # clips k-means trains its centroids on (0: up to 512 per centroid); all clips are then assigned
    nredo: int = 1  # k-means initialisations, best kept (DeepCluster: 1)
    pca_dim: int = 0  # PCA-whitening dimension before k-means (0: off)
    val_fraction: float = 0.1  # videos held out for the pseudo-label validation loss
    epoch_size: float = 1.0  # clips drawn per epoch, as a multiple of the training clips …
    epoch_clips: int = 0  # … or, > 0, this many clips per epoch (the paper's "es", Table 9 L378); not with epoch_size
    video_encoder: str = "r2plus1d_tiny"
    audio_encoder: str = "resnet_audio_tiny"
    cluster_cpus: float = 1.0  # resources of the k-means Ray task
    cluster_gpus: float = 0.0
    crop_scale: tuple[float, ...] = (0.5, 1.0)  # area fraction of the video's random resized crop; (1, 1): none (flip only)
    video_norm: Literal["clip", "fixed", "kinetics"] = "clip"  # per-clip standardisation, or fixed constants (video_input)
    # > 0: the model sees this many frames of each prepared clip: a random window to train (temporal
    # jittering, papers/xdc.md L103), the centre one otherwise; 0: every frame of the clip
    window_frames: int = 0
    # an XDC run (folder or URI) on the same prepared clips: this run is then Table 7's long-clip
    # stage (papers/xdc.md L199), one stage `long_clips` retraining that run's video encoder and its
    # head on that run's last clustering with every frame of the clips; the model has no audio encoder
    long_clips_of: str = ""

    @property
    def kmeans(self) -> KMeansConfig:
        """The k-means settings of every round's clusterings."""
        return KMeansConfig(k=self.k, niter=self.niter, nredo=self.nredo, sample=self.sample, pca_dim=self.pca_dim,
                            cpus=self.cluster_cpus, gpus=self.cluster_gpus)

    def cluster_k(self, clustering: str) -> int:
        """Clusters of ``clustering`` (``video``, ``audio`` or CDC's ``joint``, which takes ``k``)."""
        return {"video": self.k_video, "audio": self.k_audio}.get(clustering) or self.k

    def validate(self) -> None:
        self.kmeans.validate()
        for name in ("k_video", "k_audio"):
            if getattr(self, name) == 1 or getattr(self, name) < 0:
                raise ValueError(f"{name}: must be 0 (k) or >= 2, got {getattr(self, name)}")
        if self.epoch_clips < 0:
            raise ValueError(f"epoch_clips: must be >= 0, got {self.epoch_clips}")
        if self.epoch_clips and self.epoch_size != 1.0:
            raise ValueError(f"epoch_clips: {self.epoch_clips} clips per epoch and epoch_size={self.epoch_size} both set; set one")
        if self.rounds < 1:
            raise ValueError(f"rounds: must be >= 1, got {self.rounds}")
        if self.epoch_size <= 0:
            raise ValueError(f"epoch_size: must be > 0, got {self.epoch_size}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction: must be in [0, 1), got {self.val_fraction}")
        if self.window_frames < 0:
            raise ValueError(f"window_frames: must be >= 0, got {self.window_frames}")
        if self.long_clips_of and "video" not in HEADS[self.variant]:
            raise ValueError(f"long_clips_of: the {self.variant} variant has no video encoder to retrain on long clips")
        check_crop_scale(self.crop_scale)


# tiny: one long round: on the small embedded set a second round's clusters undo the first
# round's gain (measurements: docs/methods.md, "The tiny presets"); more rounds pay off with more
# data (the paper preset).
PRESETS = {
    "tiny": {
        "epochs": 3,
        "patience": 0,  # the summed val loss rises with the audio head's memorisation from epoch 1
        "batch_size": 32,
        # nredo 3: with small k one random initialisation can merge two clusters (seen at k=4 in
        # tests/test_clustering.py); restarts cost nothing at a few hundred clips
        "method": {"k": 16, "rounds": 1, "epoch_size": 3.0, "nredo": 3},
        "optim": {"name": "adam", "lr": 2e-3, "weight_decay": 1e-4, "schedule": "constant"},
    },
}


def _paper(*, epoch_clips: int, warmup: int, step: int, total: int, early_stop: bool, method: dict) -> dict:
    """A pretraining preset of Table 10 (papers/xdc.md L388-396): SGD, batch 32, lr 0.01, wd 1e-4,
    Goyal et al.'s linear warm-up over ``warmup`` epochs (L373), lr ×γ = 0.01 every ``step``
    epochs, ``total`` epochs per deep-clustering iteration, epochs of ``epoch_clips`` clips, early
    stopping on the pseudo-label validation loss for Kinetics and AudioSet."""
    return {
        "epochs": total,  # te: per deep-clustering iteration (each round trains anew until early stopping)
        # e-stop, Table 9 (L386): "stop training when validation loss is increased in 3 consecutive
        # epochs"; raysup's patience stops after 3 epochs without a new best (ours: the nearest rule)
        "patience": 3 if early_stop else 0,
        "batch_size": 32,  # bs, Table 10
        "crop_size": 224,  # L103: frames scaled to a 256 short side (prepare --size 256), random 224×224 crops; centre 224 to test
        "method": {
            "epoch_clips": epoch_clips,  # es, Table 10
            "rounds": 6,  # L115: "on average 5 to 6 deep clustering iterations" to converge (ours: the upper end)
            "video_encoder": "r2plus1d_18",  # L103: the 18-layer R(2+1)D
            "audio_encoder": "resnet18_audio",  # L103: the 18-layer ResNet on 40 × 100 log-mel (prepare --audio-seconds 2 --audio-hop-ms 20)
            "pca_dim": 256,  # the paper is silent; DeepCluster's PCA-whitening before k-means (ours)
            # the paper is silent; Kinetics' mean and deviation (the XDC author, HumamAlwassel/XDC issue #2)
            "video_norm": "kinetics",
            "crop_scale": (1.0, 1.0),  # L103: "random crop images of size 224 × 224", no resized crop
            **method,
        },
        "optim": {
            "name": "sgd",  # L373: distributed SGD
            "lr": 0.01, "lr_batch": 32,  # lr, bs, Table 10: 0.01 for 32 clips, scaled linearly with the global batch (Goyal et al. [14], L373)
            "momentum": 0.9,  # the paper is silent; VMZ's train_net.py (XDC's README points there): 0.9
            "weight_decay": 1e-4,  # wd, Table 10
            "warmup_epochs": warmup,  # we, Table 10; Goyal et al.'s warm-up (L373)
            # se: every `step` epochs ×γ. Counted after the warm-up (our reading: counted from epoch 0,
            # Kinetics' we = se = 10 would cut the lr the moment the warm-up reaches it); milestones
            # are fractions of the run, the run's end excluded
            "schedule": "step",
            "milestones": tuple((warmup + step * i) / total for i in range(1, total) if warmup + step * i < total),
            "gamma": 0.01,  # γ, Table 10 caption (L388): "γ is set to 0.01 for all settings"
        },
    }


PRESETS["paper"] = _paper(  # All DCs, Kinetics (L393): es 1M, we/se/te 10/10/30, e-stop yes
    epoch_clips=1_000_000, warmup=10, step=10, total=30, early_stop=True,
    # Table 6 (L187-193): the Kinetics model's audio clusters go to #128, its video clusters to #64
    method={"k_audio": 128, "k_video": 64},
)
PRESETS["paper_audioset"] = _paper(  # All DCs, AudioSet (L394): es 2M, we/se/te 10/10/45, e-stop yes
    epoch_clips=2_000_000, warmup=10, step=10, total=45, early_stop=True,
    method={"k": 256},  # Table 2 (L129-131): AudioSet's best k for UCF101 and HMDB51 (ESC50: 128)
)
PRESETS["paper_ig"] = _paper(  # All DCs, IG-Kinetics & IG-Random (L395): es 10M, we/se/te 1/3/10, no e-stop
    epoch_clips=10_000_000, warmup=1, step=3, total=10, early_stop=False,
    # the paper gives no k for IG; ours: AudioSet's best (Table 2 L129-131), as the best k grows with the data (L117)
    method={"k": 256},
)
# Table 7's models (papers/xdc.md L199), in two runs on 32-frame clips at 30 fps (prepare
# --clip-frames 32 --fps 30): paper_32f, the Kinetics preset with the rounds on a random 8-frame
# window of each clip (L103's 8 frames); then paper_32f_long (--set method.long_clips_of=THAT_RUN),
# the video encoder retrained on its last clustering with all 32 frames, te 30 epochs as the rounds
# ("training is similar to our ablations", L199), batch 8 and base lr 0.0025 (L400)
PRESETS["paper_32f"] = {**PRESETS["paper"], "method": {**PRESETS["paper"]["method"], "window_frames": 8}}
PRESETS["paper_32f_long"] = {**PRESETS["paper"], "batch_size": 8, "optim": {**PRESETS["paper"]["optim"], "lr": 0.0025, "lr_batch": 8}}

COLUMNS = ("video_id", "clip_index", "frames", "audio")
MAX_DRAWS_PER_CLIP = 100  # epoch_clips over the clips: more is a paper preset on far too little data
STAT_KEYS = ("cluster_sizes", "empty_clusters", "largest_cluster_fraction", "nmi_previous", "nmi_truth", "purity")


def head_names(variant: str) -> tuple[str, ...]:
    return tuple(HEADS[variant])


def encoder_names(variant: str) -> tuple[str, ...]:
    """The model's encoders: ``video`` and ``audio``; a same-modality baseline's two of one
    modality (``video``, ``video2`` or ``audio``, ``audio2``)."""
    return tuple(h for h in HEADS[variant] if not h.endswith("_cross"))


class XDC(Method):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        names = ("video",) if cfg.long_clips_of else encoder_names(cfg.variant)
        # the same-modality baselines' second encoder: the same network, its own random init (L105-115)
        self.video = video_encoder(cfg.video_encoder) if "video" in names else None
        self.audio = audio_encoder(cfg.audio_encoder) if "audio" in names else None
        self.video2 = video_encoder(cfg.video_encoder) if "video2" in names else None
        self.audio2 = audio_encoder(cfg.audio_encoder) if "audio2" in names else None
        dims = {name: getattr(self, name).out_dim for name in names}
        sources = HEADS[cfg.variant]  # head → the clustering whose labels it learns
        heads = [h for h in head_names(cfg.variant) if h.split("_")[0] in names]
        self.heads = nn.ModuleDict({name: nn.Linear(dims[name.split("_")[0]], cfg.cluster_k(sources[name])) for name in heads})

    def encoders(self):
        return {name: Encoder(getattr(self, name), getattr(self, name).out_dim) for name in encoder_names(self.cfg.variant) if getattr(self, name) is not None}

    def embed(self, batch, *, train=False):
        if "frames" not in batch or self.video is None:  # an audio-only set (ESC-50, DCASE) or xdc_2audio: the audio encoders alone
            spec = audio_input(batch["audio"])
            return {name: getattr(self, name)(spec) for name in ("audio", "audio2") if getattr(self, name) is not None}
        if self.cfg.window_frames:
            batch = {**batch, "frames": frame_window(batch["frames"], self.cfg.window_frames, train=train)}
        if self.cfg.long_clips_of:
            return {"video": self.video(video_input(batch["frames"], train=train, crop_scale=tuple(self.cfg.crop_scale), norm=self.cfg.video_norm))}
        if self.video is not None and self.audio is not None:
            return audio_visual_embed(self.video, self.audio, batch, train, crop_scale=tuple(self.cfg.crop_scale), norm=self.cfg.video_norm)
        # same-modality-XDC: both encoders see the same clip, as XDC's two do (the paper is silent; ours)
        frames = video_input(batch["frames"], train=train, crop_scale=tuple(self.cfg.crop_scale), norm=self.cfg.video_norm)
        return {"video": self.video(frames), "video2": self.video2(frames)}

    def taps(self, batch):
        """DCASE's features (papers/xdc.md L199: "conv_5 features"): the audio encoder's conv5
        maps, globally average-pooled as the network pools them for its output (the pooling: the
        paper is silent; ours), ``audio_conv5`` [B,C]; none without an audio encoder."""
        return {"audio_conv5": self.audio(audio_input(batch["audio"]))} if self.audio is not None else {}

    def forward(self, batch):
        feats = self.embed(batch, train=self.training)
        out, total = {}, 0.0
        for name, head in self.heads.items():
            logits = head(feats[name.split("_")[0]])  # [B,k]
            target = batch[f"pl_{name}"]  # [B]
            loss = F.cross_entropy(logits, target)
            total = total + loss
            out[f"loss_{name}"] = loss.detach()
            out[f"acc_{name}"] = (logits.argmax(1) == target).float().mean()
        out["loss"] = total
        return out

    def load_pretrained(self, state):
        """Encoders from the previous round; heads start fresh (DeepCluster)."""
        self.load_state_dict({k: v for k, v in state.items() if not k.startswith("heads.")}, strict=False)


def frame_window(frames, n: int, *, train: bool):
    """``n`` consecutive frames of each clip [B,T,...] (all T when T <= n): at a random start per
    clip when ``train`` (temporal jittering, papers/xdc.md L103), else the centred ones."""
    t = frames.shape[1]
    if t <= n:
        return frames
    start = torch.randint(0, t - n + 1, (frames.shape[0],)) if train else torch.full((frames.shape[0],), (t - n) // 2)
    index = (start[:, None] + torch.arange(n)).to(frames.device)  # [B,n]
    return torch.stack([f[i] for f, i in zip(frames, index)])


def check(cfg: TrainConfig, data: PreparedData) -> None:
    m: Config = cfg.method
    if cfg.preset == "paper_32f_long" and not m.long_clips_of:
        raise ConfigError("method.long_clips_of: the paper_32f_long preset retrains a paper_32f run's video encoder; --set method.long_clips_of=RUN_DIR")
    if "audio" not in data.specs or "frames" not in data.specs:
        raise ConfigError("XDC needs frames and audio: the prepared data lacks one of them (prepare videos with audio, without --audio-only)")
    if data.manifest["counts"]["no_audio"] == data.manifest["counts"]["videos"]:
        raise ConfigError("XDC needs audio: no prepared video has an audio track; prepare videos with audio")
    clips, more = int(data.hash_counts["audio_clips"].sum()), "use more videos with audio or a shorter --clip-stride when preparing"
    for name in CLUSTERINGS[m.variant]:
        k = m.cluster_k(name)
        if k > clips:
            field = f"method.k_{name}" if getattr(m, f"k_{name}", 0) else "method.k"
            raise ConfigError(f"{field}: {k} clusters need at least as many clips; the prepared data has {clips} with audio; lower {field} or {more}")
    if m.pca_dim > clips:
        raise ConfigError(f"method.pca_dim: PCA to {m.pca_dim} dimensions needs at least as many clips; the prepared data has {clips} "
                          f"with audio; lower method.pca_dim (0: no PCA) or {more}")
    if m.epoch_clips > MAX_DRAWS_PER_CLIP * clips:  # each draw is a copy of the clip's cells in the stream's block
        raise ConfigError(f"method.epoch_clips: {m.epoch_clips} clips per epoch would draw each of the {clips} prepared clips "
                          f"with audio ~{m.epoch_clips // clips} times; at most {MAX_DRAWS_PER_CLIP} (set method.epoch_clips=0 "
                          "for epochs of method.epoch_size × the clips)")
    drawn = m.epoch_clips or round(m.epoch_size * train_split(data, m.val_fraction, audio=True))
    check_batch(cfg, drawn, ", or raise method.epoch_size (or method.epoch_clips)")


def build(cfg: TrainConfig, specs) -> XDC:
    return XDC(cfg.method)


def side_tasks(cfg: TrainConfig) -> dict[str, dict[str, float]]:
    return {"the k-means task (method.cluster_cpus, cluster_gpus)": {"CPU": cfg.method.cluster_cpus, "GPU": cfg.method.cluster_gpus}}


def audio_clips(data: PreparedData, shuffle: int | None = None, held: bool | None = None, fraction: float = 0.0):
    """The stored clips of the videos with an audio track (their ``audio`` cells are not null),
    each with the ``path`` of its shard (features and pseudo-labels are joined by shard:
    :func:`raysup.cluster_features.lookup`; ``shuffle``: a seed, the files in another order every
    epoch; ``held``, ``fraction``: only the held-out split's or the others', reading only their
    shards, :meth:`PreparedData.dataset`). An expression filter keeps the fixed-size tensor
    columns; a row-wise one (a Python function) rebuilt them as variable-size binary, which the
    collate function cannot read."""
    clips = data.dataset(list(COLUMNS), crop=None, shuffle=shuffle, paths=True, held=held, fraction=fraction)
    return clips.filter(expr=col("audio").is_not_null()) if data.manifest["counts"]["no_audio"] else clips


def stages(cfg: TrainConfig, data: PreparedData, log: StageLog) -> Iterator[Stage]:
    """One stage per clustering round (``round_<r>``); finished rounds are skipped on resume.
    Round r writes ``RUN_DIR/features/round_r`` (the clips' features, Parquet; a round's are
    removed once the next round has clustered) and ``RUN_DIR/clusters/round_r/``
    (:func:`raysup.cluster_features.cluster_features`'s labels, centroids and statistics), and
    trains from the previous round's checkpoint. Features are of centre crops."""
    m: Config = cfg.method
    run_dir = log.run_dir
    if m.long_clips_of:
        if not log.finished("long_clips"):
            yield long_clip_stage(cfg, data, m.long_clips_of)
        return
    fs, root = resolve(run_dir)
    if exists(fs, f"{root}/clusters") and not log.resume:
        raise FileExistsError(f"{redact(run_dir)} already holds an XDC run; pass --resume to continue it or use a new --out")
    truth_of = label_of(read_labels_csv(log.labels)) if log.labels else None
    clips = audio_clips(data)  # stored cells; decoded after each round's draw
    clusterings = [Clustering(name, columns, m.cluster_k(name)) for name, columns in CLUSTERINGS[m.variant].items()]
    heads = HEADS[m.variant]
    previous = None
    for r in range(m.rounds):
        name = f"round_{r}"
        features, clusters = join(run_dir, "features", name), join(run_dir, "clusters", name)
        if log.finished(name):
            previous = clusters
            continue
        init = latest_checkpoint(run_dir) if r > 0 else None
        timing = {"time_features_s": 0.0, "time_kmeans_s": 0.0}  # wall seconds of this round's clustering
        stats_path = f"{root}/clusters/{name}/{STATS}"
        if exists(fs, stats_path):  # resumed mid-round: same labels as before
            cstats = read_json(fs, stats_path)
        else:
            for folder in (f"{root}/features/{name}", f"{root}/clusters/{name}"):  # a killed round's partial output
                if exists(fs, folder):
                    fs.delete_dir(folder)
            t = time.perf_counter()
            write_features(data.decode(clips, crop="centre"), features, cfg, build, data.specs, init, encoders=encoder_names(m.variant))
            timing["time_features_s"] = time.perf_counter() - t
            t = time.perf_counter()
            cstats = cluster_features(features, clusters, clusterings, m.kmeans, seed=cfg.seed + r, previous=previous, truth=truth_of,
                                      val_fraction=m.val_fraction)
            timing["time_kmeans_s"] = time.perf_counter() - t
            if r > 0 and exists(fs, f"{root}/features/round_{r - 1}"):
                fs.delete_dir(f"{root}/features/round_{r - 1}")
        # per encoder, the clusters it learns from (the paper's Table 6 analysis)
        stats = {e: {key: v for key, v in cstats[heads[e]].items() if key in STAT_KEYS} for e in encoder_names(m.variant)}
        n_train = int(sum(cstats[clusterings[0].name]["train_sizes"]))
        n_draw = m.epoch_clips or int(round(m.epoch_size * n_train))
        rates = draw_rates({h: cstats[src]["train_sizes"] for h, src in heads.items()}, n_draw)
        train, val = labelled_streams(cfg, data, clusters, heads, rates, val=n_train < cstats["rows"])
        extra = {"round": r, **timing} | {f"{key}_{e}": v for e, st in stats.items() for key, v in st.items()}
        yield Stage(train=train, val=val, rows_per_epoch=n_draw, name=name, init_checkpoint=init, extra_metrics=extra)
        write_json(fs, f"{root}/clusters/{name}_stats.json", stats)
        previous = clusters


def labelled_streams(cfg: TrainConfig, data: PreparedData, clusters: str, heads: dict[str, str], rates: dict, *, val: bool):
    """A round's pseudo-labelled clips (stored cells, joined by shard with the labels in
    ``clusters``: :func:`raysup.cluster_features.round_rows`): the training draws (``rates``),
    the files in another order every epoch; and the held-out videos' clips if ``val``."""
    fraction = cfg.method.val_fraction
    rows = {"labels": Labels.open(clusters), "heads": heads, "val_fraction": fraction}
    train = audio_clips(data, shuffle=cfg.seed, held=False, fraction=fraction).map_batches(round_rows, fn_kwargs={**rows, "rates": rates}, batch_format="pyarrow")
    if not val:
        return train, None
    return train, audio_clips(data, held=True, fraction=fraction).map_batches(round_rows, fn_kwargs={**rows, "rates": None}, batch_format="pyarrow")


def long_clip_stage(cfg: TrainConfig, data: PreparedData, source: str) -> Stage:
    """Stage ``long_clips`` (papers/xdc.md L199: "we re-train our video encoder on the last
    clustering assignment using 32-frame clips"; L400: batch 8, base lr 0.0025, the preset's):
    the video encoder and its head from the ``source`` run's last checkpoint, on its last round's
    clusters (joined by clip key: ``source`` must be of the same prepared data), every frame of
    the clips, this run's epochs and schedule."""
    m: Config = cfg.method
    fs, root = resolve(source)
    rounds = sorted(int(f.base_name[6:]) for f in fs.get_file_info(pafs.FileSelector(f"{root}/clusters", allow_not_found=True))
                    if f.base_name.startswith("round_") and exists(fs, f"{f.path}/{STATS}"))
    if not rounds:
        raise ConfigError(f"method.long_clips_of: {redact(source)} holds no clustered XDC round; give the paper_32f run")
    clusters, cstats = join(source, "clusters", f"round_{rounds[-1]}"), read_json(fs, f"{root}/clusters/round_{rounds[-1]}/{STATS}")
    init = latest_checkpoint(source)
    heads = {"video": HEADS[m.variant]["video"]}
    n_train = int(sum(cstats[heads["video"]]["train_sizes"]))
    n_draw = m.epoch_clips or int(round(m.epoch_size * n_train))
    rates = draw_rates({"video": cstats[heads["video"]]["train_sizes"]}, n_draw)
    train, val = labelled_streams(cfg, data, clusters, heads, rates, val=n_train < cstats["rows"])
    return Stage(train=train, val=val, rows_per_epoch=n_draw, name="long_clips", init_checkpoint=init)


# --- evaluation -------------------------------------------------------------------------------
# Finetuning, Table 11 (papers/xdc.md L412-417): bs 32, we/se/te 2/2/8, wd 0.005, no e-stop,
# γ = 0.01 (caption); the step counted after the warm-up as in pretraining (decays at epochs 4 and
# 6); es, an epoch in clips drawn from the train split: HMDB51 40K (L415), UCF101 106K (L416),
# ESC50 20K (L417). Base lr: the paper takes the best of a cross-validation over FINETUNE_LRS
# (Table 12, L420-423), which experiments/xdc_finetune_lr_cv.py runs (raysup.sweep.lr_cv); a
# single `raysup probe --protocol paper` uses ours: 0.001 for full finetuning (the grid value
# nearest VMZ's UCF101 finetuning lr, 1e-4 per GPU × 8 GPUs, scripts/finetune_ucf101.sh, where
# XDC's README sends finetuning) and 0.01 for fc-only ("higher learning rates tend to be
# beneficial when learning FC-only", L402; the grids' shared top); the same for ESC50's audio
# encoder (no VMZ script for it). Momentum 0.9: the paper is silent (VMZ's). Test: L103, "we
# uniformly sample 10 clips per testing example and average their predictions".
FINETUNE_LRS = {
    "video": (0.001, 0.002, 0.004, 0.006, 0.008, 0.01),  # Table 12 (L422): full finetuning
    "video_fc": (0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.02, 0.04),  # Table 12 (L423): FC only
}
FINETUNE_LRS |= {"esc50": FINETUNE_LRS["video"], "esc50_fc": FINETUNE_LRS["video_fc"]}  # the same grids for every downstream set (L402, L419)
FINETUNE_SCHEDULE = {"name": "sgd", "momentum": 0.9, "weight_decay": 5e-3, "schedule": "step", "milestones": (0.5, 0.75), "gamma": 0.01,
                     "warmup_epochs": 2}
ACTION_EPOCH_CLIPS = (("UCF101", 106_000), ("HMDB51", 40_000))  # es, Table 11 (L416, L415)
ESC50_EPOCH_CLIPS = (("ESC50", 20_000),)  # es, Table 11 (L417)
FINETUNE_CITES = (("optim", "papers/xdc.md Tables 11-12 L412-423 (lr: ours, see above)"), ("epochs", "Table 11 L415-417: te 8"),
                  ("batch_size", "Table 11 L415-417"), ("epoch_clips", "Table 11 L415-417: es"), ("test_clips", "L103"))


def _finetune(key: str, encoder: str, full: bool, lr: float, epoch_clips, **kw) -> FinetuneProtocol:
    """One of Table 11's finetunings (see above): ``encoder`` with a new head, trained whole (``full``) or FC-only."""
    return FinetuneProtocol(key=key, encoder=encoder, full=full, optim=OptimConfig(lr=lr, **FINETUNE_SCHEDULE), epochs=8, batch_size=32,
                            test_clips=10, epoch_clips=epoch_clips, cites=FINETUNE_CITES, **kw)


# DCASE (L199): "we follow [29] and extract conv_5 features for 60 uniformly-sampled clips per
# audio sample and learn a linear SVM"; the paper is silent on the clips' length and on C. Ours:
# 2 s clips, the audio encoder's input (L103: "we sample 2 seconds", 40 × 100 log-mel), and
# C = 0.01, the value GDT states for the same protocol of [29] (papers/gdt.md L164, L324, whose
# 1 s sub-clips are GDT's own input length).
DCASE = AudioClipsProtocol(
    key="dcase", tap="audio_conv5", clips=60, seconds=2.0, classifier="svm", linear=None, svm_c=0.01, task="dcase",
    published=(("DCASE2014, AudioSet pretraining", 95.0), ("DCASE2014, IG-Random pretraining", 95.0)),  # Table 7b (L240-241)
    cites=(("clips", "papers/xdc.md L199"), ("classifier", "L199"), ("tap", "L199 (pooling: ours)"), ("seconds", "L103 (ours for DCASE)"),
           ("svm_c", "ours: papers/gdt.md L324's for the same protocol")),
)  # fmt: skip
PAPER_PROTOCOLS = (
    _finetune("video", "video", True, 0.001, ACTION_EPOCH_CLIPS,
              published=(("UCF101 split 1, Kinetics", 74.2), ("HMDB51 split 1, Kinetics", 39.0), ("UCF101 3 splits, Kinetics 32 frames", 86.8),
                         ("HMDB51 3 splits, Kinetics 32 frames", 52.6))),  # Table 1 L109-110; Table 7a L220
    _finetune("video_fc", "video", False, 0.01, ACTION_EPOCH_CLIPS),
    # ESC50 (Table 11 L417): the audio encoder finetuned on 2 s clips (L103), prepared --audio-only
    # --audio-seconds 2 --audio-hop-ms 20 as the pretraining audio; 10 test clips per recording
    _finetune("esc50", "audio", True, 0.001, ESC50_EPOCH_CLIPS, seconds=2.0, task="esc50",
              published=(("ESC50 split 1, Kinetics", 78.0), ("ESC50 split 1, AudioSet", 85.8), ("ESC50 split 1, IG-Random", 86.3),
                         ("ESC50 split 1, IG-Kinetics", 84.8), ("ESC50 5 splits, AudioSet", 84.8), ("ESC50 5 splits, IG-Random", 85.4))),
    # Table 1 L111; Table 3 L142-146; Table 7b L218-219
    _finetune("esc50_fc", "audio", False, 0.01, ESC50_EPOCH_CLIPS, seconds=2.0, task="esc50",
              published=(("ESC50 split 1, IG-Random", 84.5), ("ESC50 split 1, IG-Kinetics", 84.3))),  # Table 5 L169-170
    DCASE,
)  # fmt: skip
