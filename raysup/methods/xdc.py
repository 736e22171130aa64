"""XDC: cross-modal deep clustering (Alwassel et al. 2020), with the SDC/MDC/CDC baselines.

Each round (DeepCluster, Caron et al. 2018, where the XDC paper is silent):
1. features of every clip from the current encoders (Ray Data ``map_batches`` actor pool),
   written as Parquet to the run folder (:func:`raysup.features.write_features`);
2. k-means pseudo-labels (:func:`raysup.cluster_features.cluster_features`: centroids trained
   on a sample in one faiss Ray task, every clip assigned by ``map_batches``, labels as Parquet;
   :data:`raysup.clustering.HEADS` decides which modality's clusters supervise which encoder);
3. the labels are joined to the clips by key as they stream, clips are resampled uniformly over
   clusters, 10% of videos are held out for the pseudo-label validation loss;
4. the classification heads are reset and a TorchTrainer trains until the validation loss
   stops improving (``patience``) or ``epochs``; the next round starts from its checkpoint.
Clips of videos without audio are left out (their audio clusters would be noise).
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from ray.data.expressions import col
from torch import nn

from raysup.checkpoint import latest_checkpoint
from raysup.cluster_features import STATS, Clustering, cluster_features, draw_rates, parquet_files, round_rows
from raysup.clustering import CLUSTERINGS, HEADS, KMeansConfig
from raysup.config import ConfigError, OptimConfig, TrainConfig
from raysup.data.ingest import PreparedData
from raysup.data.labels import label_of, read_labels_csv
from raysup.data.storage import exists, join, read_json, redact, resolve, write_json
from raysup.data.transforms import check_crop_scale
from raysup.features import write_features
from raysup.methods.base import Encoder, Method, Stage, StageLog, audio_visual_embed, check_batch, train_videos
from raysup.models import audio_encoder, video_encoder
from raysup.protocol_specs import FinetuneProtocol


@dataclass(frozen=True)
class Config:
    variant: Literal["xdc", "sdc", "mdc", "cdc"] = "xdc"
    k: int = 64  # clusters per head
    rounds: int = 3  # clustering rounds; each trains for up to TrainConfig.epochs
    niter: int = 20  # k-means iterations
    sample: int = 0  # clips k-means trains its centroids on (0: up to 512 per centroid); all clips are then assigned
    nredo: int = 1  # k-means initialisations, best kept (DeepCluster: 1)
    pca_dim: int = 0  # PCA-whitening dimension before k-means (0: off)
    val_fraction: float = 0.1  # videos held out for the pseudo-label validation loss
    epoch_size: float = 1.0  # clips drawn per epoch, as a multiple of the training clips
    video_encoder: str = "r2plus1d_tiny"
    audio_encoder: str = "resnet_audio_tiny"
    cluster_cpus: float = 1.0  # resources of the k-means Ray task
    cluster_gpus: float = 0.0
    crop_scale: tuple[float, ...] = (0.5, 1.0)  # area fraction of the video's random resized crop; (1, 1): none (flip only)
    video_norm: Literal["clip", "fixed", "kinetics"] = "clip"  # per-clip standardisation, or fixed constants (video_input)

    @property
    def kmeans(self) -> KMeansConfig:
        """The k-means settings of every round's clusterings."""
        return KMeansConfig(k=self.k, niter=self.niter, nredo=self.nredo, sample=self.sample, pca_dim=self.pca_dim,
                            cpus=self.cluster_cpus, gpus=self.cluster_gpus)

    def validate(self) -> None:
        self.kmeans.validate()
        if self.rounds < 1:
            raise ValueError(f"rounds: must be >= 1, got {self.rounds}")
        if self.epoch_size <= 0:
            raise ValueError(f"epoch_size: must be > 0, got {self.epoch_size}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction: must be in [0, 1), got {self.val_fraction}")
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
    # paper (Alwassel et al. 2020): the encoders are the paper's (§4, R(2+1)D-18 and ResNet-18 on
    # log-mel); k and the optimiser below are NOT checked against the paper's appendix (its text
    # was not readable where this preset was written): the optimisation schedule (warm-up, step
    # decay, epoch size) and cluster-uniform resampling are open deviations, listed in
    # docs/reproducing.md.
    "paper": {
        # per round: "we train on the pseudo labels until the validation loss saturates" (the XDC
        # author, HumamAlwassel/XDC issue #8): early stopping on the pseudo-label validation loss;
        # the 20-epoch cap and patience 3 are ours
        "epochs": 20,
        "patience": 3,
        "batch_size": 32,  # unverified
        "crop_size": 112,  # §4: R(2+1)D-18 on 112×112 clips (of frames prepared at --size 128 --width 171)
        "method": {
            "k": 256,  # Table 2 studies k ∈ {64, …, 1024} (the sweep's grid); 256 unverified as the default
            "rounds": 10,  # unverified
            "video_encoder": "r2plus1d_18",  # §4: R(2+1)D-18
            "audio_encoder": "resnet18_audio",  # §4: ResNet-18 on log-mel spectrograms
            "pca_dim": 256,  # DeepCluster's PCA-whitening before k-means (unverified for XDC)
            # video input: Kinetics' mean and deviation (the XDC author, HumamAlwassel/XDC issue
            # #2); the random 112 crop of crop_size and a flip, no resized crop: VMZ's video
            # pipeline, which XDC's README points to (scale 128×171, crop 112), unverified
            # against the paper's text
            "video_norm": "kinetics",
            "crop_scale": (1.0, 1.0),
        },
        "optim": {"name": "sgd", "lr": 0.01, "weight_decay": 1e-4, "schedule": "constant"},  # unverified
    },
}

COLUMNS = ("video_id", "clip_index", "frames", "audio")
STAT_KEYS = ("cluster_sizes", "empty_clusters", "largest_cluster_fraction", "nmi_previous", "nmi_truth", "purity")


def head_names(variant: str) -> tuple[str, ...]:
    return ("video", "audio", "video_cross", "audio_cross") if variant == "mdc" else ("video", "audio")


class XDC(Method):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.video = video_encoder(cfg.video_encoder)
        self.audio = audio_encoder(cfg.audio_encoder)
        dims = {"video": self.video.out_dim, "audio": self.audio.out_dim}
        self.heads = nn.ModuleDict({name: nn.Linear(dims[name.split("_")[0]], cfg.k) for name in head_names(cfg.variant)})

    def encoders(self):
        return {"video": Encoder(self.video, self.video.out_dim), "audio": Encoder(self.audio, self.audio.out_dim)}

    def embed(self, batch, *, train=False):
        return audio_visual_embed(self.video, self.audio, batch, train, crop_scale=tuple(self.cfg.crop_scale), norm=self.cfg.video_norm)

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


def check(cfg: TrainConfig, data: PreparedData) -> None:
    m: Config = cfg.method
    if "audio" not in data.specs or "frames" not in data.specs:
        raise ConfigError("XDC needs frames and audio: the prepared data lacks one of them (prepare videos with audio, without --audio-only)")
    no_audio = set(data.manifest.get("no_audio", []))
    clips_of = {v: n for v, n in data.manifest["videos"].items() if v not in no_audio}  # videos with audio → their clips
    if not clips_of:
        raise ConfigError("XDC needs audio: no prepared video has an audio track; prepare videos with audio")
    clips, more = sum(clips_of.values()), "use more videos with audio or a shorter --clip-stride when preparing"
    if m.k > clips:
        raise ConfigError(f"method.k: {m.k} clusters need at least as many clips; the prepared data has {clips} with audio; lower method.k or {more}")
    if m.pca_dim > clips:
        raise ConfigError(f"method.pca_dim: PCA to {m.pca_dim} dimensions needs at least as many clips; the prepared data has {clips} "
                          f"with audio; lower method.pca_dim (0: no PCA) or {more}")
    train = train_videos(sorted(clips_of), m.val_fraction, "videos with audio")
    check_batch(cfg, round(m.epoch_size * sum(clips_of[v] for v in train)), ", or raise method.epoch_size")


def build(cfg: TrainConfig, specs) -> XDC:
    return XDC(cfg.method)


def side_tasks(cfg: TrainConfig) -> dict[str, dict[str, float]]:
    return {"the k-means task (method.cluster_cpus, cluster_gpus)": {"CPU": cfg.method.cluster_cpus, "GPU": cfg.method.cluster_gpus}}


def audio_clips(data: PreparedData):
    """The stored clips of the videos with an audio track. An expression filter keeps the
    fixed-size tensor columns; a row-wise one (a Python function) rebuilt them as variable-size
    binary, which the collate function cannot read."""
    no_audio = sorted(data.manifest.get("no_audio", []))
    clips = data.dataset(list(COLUMNS), crop=None)
    return clips.filter(expr=col("video_id").not_in(no_audio)) if no_audio else clips


def stages(cfg: TrainConfig, data: PreparedData, log: StageLog) -> Iterator[Stage]:
    """One stage per clustering round (``round_<r>``); finished rounds are skipped on resume.
    Round r writes ``RUN_DIR/features/round_r`` (the clips' features, Parquet; a round's are
    removed once the next round has clustered) and ``RUN_DIR/clusters/round_r/``
    (:func:`raysup.cluster_features.cluster_features`'s labels, centroids and statistics), and
    trains from the previous round's checkpoint. Features are of centre crops."""
    m: Config = cfg.method
    run_dir = log.run_dir
    fs, root = resolve(run_dir)
    if exists(fs, f"{root}/clusters") and not log.resume:
        raise FileExistsError(f"{redact(run_dir)} already holds an XDC run; pass --resume to continue it or use a new --out")
    truth_of = label_of(read_labels_csv(log.labels)) if log.labels else None
    clips = audio_clips(data)  # stored cells; decoded after each round's draw
    clusterings = [Clustering(name, columns) for name, columns in CLUSTERINGS[m.variant].items()]
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
            write_features(data.decode(clips, crop="centre"), features, cfg, build, data.specs, init, encoders=("audio", "video"))
            timing["time_features_s"] = time.perf_counter() - t
            t = time.perf_counter()
            cstats = cluster_features(features, clusters, clusterings, m.kmeans, seed=cfg.seed + r, previous=previous, truth=truth_of,
                                      val_fraction=m.val_fraction)
            timing["time_kmeans_s"] = time.perf_counter() - t
            if r > 0 and exists(fs, f"{root}/features/round_{r - 1}"):
                fs.delete_dir(f"{root}/features/round_{r - 1}")
        # per encoder, the clusters it learns from (the paper's Table 6 analysis)
        stats = {e: {key: v for key, v in cstats[heads[e]].items() if key in STAT_KEYS} for e in ("video", "audio")}
        n_train = int(sum(cstats[clusterings[0].name]["train_sizes"]))
        n_draw = int(round(m.epoch_size * n_train))
        rows = {"labels": clusters, "files": tuple(parquet_files(clusters)), "heads": heads, "val_fraction": m.val_fraction}
        rates = draw_rates({h: cstats[src]["train_sizes"] for h, src in heads.items()}, n_draw)
        train = clips.map_batches(round_rows, fn_kwargs={**rows, "rates": rates}, batch_format="pyarrow").randomize_block_order()
        val = clips.map_batches(round_rows, fn_kwargs={**rows, "rates": None}, batch_format="pyarrow") if n_train < cstats["rows"] else None
        extra = {"round": r, **timing} | {f"{key}_{e}": v for e, st in stats.items() for key, v in st.items()}
        yield Stage(train=train, val=val, rows_per_epoch=n_draw, name=name, init_checkpoint=init, extra_metrics=extra)
        write_json(fs, f"{root}/clusters/{name}_stats.json", stats)
        previous = clusters


# --- evaluation -------------------------------------------------------------------------------
# The XDC paper's own finetuning schedule was not found (its README sends finetuning to the VMZ
# repository); these are VMZ's UCF101 finetuning values (scripts/finetune_ucf101.sh with
# c2/tools/train_net.py): SGD (momentum 0.9; VMZ: Nesterov), base lr 1e-4 per GPU × 8 GPUs =
# 8e-4 for 8 × 4 = 32 clips, weight decay 5e-3, 8 epochs, lr stepped every 2 epochs (×0.1,
# train_net's default gamma). VMZ's epoch is 100K clips; here one pass over the train clips. The
# fc-only variant (only the new linear head) uses the same schedule.
FINETUNE_OPTIM = OptimConfig(name="sgd", lr=8e-4, momentum=0.9, weight_decay=5e-3, schedule="step", milestones=(0.25, 0.5, 0.75), gamma=0.1)
PAPER_PROTOCOLS = (
    FinetuneProtocol(key="video", encoder="video", full=True, optim=FINETUNE_OPTIM, epochs=8, batch_size=32, test_clips=10),
    FinetuneProtocol(key="video_fc", encoder="video", full=False, optim=FINETUNE_OPTIM, epochs=8, batch_size=32, test_clips=10),
)
