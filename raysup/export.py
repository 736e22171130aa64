"""``raysup export``: one encoder of a run as a plain ``state_dict`` file, for use outside raysup.

The file (``torch.save`` of a ``{key: tensor}`` dict; ``safetensors`` is not a dependency) loads
with ``strict=True`` into the architecture its JSON card (``FILE.json``) names: torchvision's own
``r2plus1d_18`` / ``resnet18`` for the paper-size video and audio encoders (raysup's
``body.`` prefix removed), raysup's constructor for the others. The card holds the Python that
builds and loads it, the input each encoder expects (shapes and normalisation), the feature
width, and how the weights were trained: method, preset, resolved config, data, epochs and steps,
final training metrics, raysup's version. docs/export.md is the user's page.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs
import torch
import torchvision
from torch import nn

from raysup import __version__, runner
from raysup.checkpoint import latest_checkpoint, load_checkpoint_file
from raysup.config import ConfigError, TrainConfig, to_dict
from raysup.data.schema import TensorSpec
from raysup.data.storage import exists, read_json, redact, resolve
from raysup.data.transforms import FIXED_MEAN, FIXED_STD, KINETICS_MEAN, KINETICS_STD
from raysup.methods import load_config, method_module
from raysup.models import audio, image, video
from raysup.train import read_lines

# raysup's constructors by the class they build: the candidates an encoder is matched against
CONSTRUCTORS = {
    video.VideoEncoder: (video.r2plus1d_tiny, video.r2plus1d_18),
    audio.AudioEncoder: (audio.resnet_audio_tiny, audio.resnet18_audio),
    image.ImageEncoder: (image.caffenet_tiny, image.caffenet_bn, image.vgg16_bn),
    image.AlexNetHypercolumn: (image.alexnet_hypercolumn_tiny, image.alexnet_hypercolumn),
}
# the encoders that are torchvision's own networks under raysup's ``body.``: how to build them there
TORCHVISION = {
    "r2plus1d_18": "net = torchvision.models.video.r2plus1d_18()\n"
                   "net.fc = torch.nn.Identity()  # raysup's encoder ends at the pooled 512-D features",
    "resnet18_audio": "net = torchvision.models.resnet18()\n"
                      "net.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)  # one input channel: a log-mel spectrogram\n"
                      "net.fc = torch.nn.Identity()  # raysup's encoder ends at the pooled 512-D features",
}
NORMS = {
    "clip": "standardised per clip and channel over T,H,W (mean 0, std 1; std clamped at 1e-3)",
    "fixed": f"(x - {FIXED_MEAN}) / {FIXED_STD}",
    "kinetics": f"(x - mean) / std per channel, mean {KINETICS_MEAN}, std {KINETICS_STD}",
}


@dataclass(frozen=True)
class Architecture:
    """What an encoder's weights load into: ``name`` (raysup's constructor), ``code`` (Python that
    builds it as ``net``), ``prefix`` (removed from raysup's keys) and ``call`` (its features)."""

    name: str
    code: str
    prefix: str = ""
    call: str = "net(x)"


def architecture(net: nn.Module, method: str, encoder: str, card: str) -> Architecture:
    """The constructor that builds ``net`` (same class, same parameter and buffer shapes; built on
    the meta device, so paper-size candidates cost nothing), as an :class:`Architecture`; a
    network of the method's own (a plugin's) is built through the method, from the card ``card``."""
    kwargs = constructor_kwargs(net)
    for ctor in CONSTRUCTORS.get(type(net), ()):
        with torch.device("meta"):
            candidate = ctor(**kwargs)
        if shapes(candidate) == shapes(net):
            if ctor.__name__ in TORCHVISION:
                return Architecture(ctor.__name__, "import torch, torchvision\n" + TORCHVISION[ctor.__name__], prefix="body.")
            args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
            call = "net.pooled(x)" if isinstance(net, image.AlexNetHypercolumn) else "net(x)"
            return Architecture(ctor.__name__, f"import torch\nfrom {ctor.__module__} import {ctor.__name__}\nnet = {ctor.__name__}({args})", call=call)
    return Architecture(
        f"{method}.{encoder} ({type(net).__module__}.{type(net).__qualname__})",
        "import json, torch\nfrom raysup.data.schema import TensorSpec\nfrom raysup.methods import load_config, method_module\n"
        f"card = json.load(open({card!r}))\n"
        "specs = {k: TensorSpec.from_dict(v) for k, v in card['input_from']['specs'].items()}\n"
        "net = method_module(card['method']).build(load_config(card['config']), specs).encoders()[card['encoder']].network",
        call=f"method_module({method!r}).build(...).embed(batch)[{encoder!r}]  (the method's own input transform, then net)",
    )


def shapes(net: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def constructor_kwargs(net: nn.Module) -> dict[str, int]:
    """The constructor arguments that vary between a method's uses of one architecture (input
    channels of a flow or difference stack, head widths)."""
    if isinstance(net, image.ImageEncoder):
        first = next(m for m in net.features.modules() if isinstance(m, nn.Conv2d))
        return {"in_channels": first.in_channels, "fc_dim": net.out_dim}
    if isinstance(net, image.AlexNetHypercolumn):
        return {"in_channels": net.stages["conv1"][0].in_channels, "out_dim": net.head[-1].out_features, "hidden": net.head[0].out_features}
    return {}


def input_format(cfg: TrainConfig, name: str, net: nn.Module, specs: dict[str, TensorSpec]) -> dict[str, Any]:
    """What the encoder ``name`` takes, from the prepared clips ``specs`` (frames uint8 [T,S,S,3]
    at the run's crop, log-mel [M,F]), as raysup's evaluation feeds it (no augmentation)."""
    frames, mel = specs.get("frames"), specs.get("audio")
    t, s = (frames.shape[0], frames.shape[1]) if frames is not None else (None, None)
    if isinstance(net, video.VideoEncoder):
        norm = getattr(cfg.method, "video_norm", "clip")
        return {"shape": ["B", 3, t, s, s], "dtype": "float32", "frames": t, "crop": s, "norm": norm,
                "from_clip": f"uint8 RGB frames [B,T,H,W,3] (centre {s}x{s} crop) -> [B,3,T,H,W], / 255, then {NORMS[norm]}",
                "raysup": f"raysup.data.transforms.video_input(frames, train=False, norm={norm!r})"}
    if isinstance(net, audio.AudioEncoder):
        return {"shape": ["B", 1, *(mel.shape if mel is not None else (None, None))], "dtype": "float32",
                "from_clip": "log-mel spectrogram [B,M,F] (raysup prepare's audio column) -> standardised per spectrogram "
                             "over M,F (mean 0, std 1; std clamped at 1e-3) -> [B,1,M,F]",
                "raysup": "raysup.data.transforms.audio_input(log_mel)"}
    if not isinstance(net, (image.ImageEncoder, image.AlexNetHypercolumn)):
        return {"shape": None, "from_clip": f"as {cfg.method_name}'s embed(batch)[{name!r}] computes it (its module's source)"}
    channels = constructor_kwargs(net)["in_channels"]
    if isinstance(net, image.AlexNetHypercolumn):
        return {"shape": ["B", channels, s, s], "dtype": "float32",
                "from_clip": "the clip's centre frame (index T//2) [B,3,H,W] / 255, standardised per image and channel over H,W",
                "raysup": "raysup.data.transforms.standardize(raysup.methods.cpfs.centre_frame(frames), (2, 3))"}
    m = cfg.method  # Cross and Learn's two streams
    if name == "rgb":
        what = (f"the RGB frame in the middle of the motion stack / 255, centre {s}x{s} crop"
                + (", averaged over its 3 channels (channel splitting)" if m.channel_split else "") + ", standardised per image over C,H,W")
    elif m.modality == "diff":
        what = f"{m.fields} consecutive frame differences (RGB / 255, in [-1,1]) centred in the clip, centre {s}x{s} crop, as [B,n*3,H,W]"
    else:
        what = f"{m.fields} consecutive flow fields (dx, dy in pixels, each minus its own mean) centred in the clip, centre {s}x{s} crop, as [B,n*2,H,W]"
    call = f"raysup.data.pairs.pair_input(frames, flow, {m.modality!r}, {m.fields}, size={s}, train=False, channel_split={m.channel_split})"
    return {"shape": ["B", channels, s, s], "dtype": "float32", "from_clip": what, "raysup": f"{call}[{0 if name == 'rgb' else 1}]"}


def training_record(run_dir: str, checkpoint: str, saved: dict[str, Any]) -> dict[str, Any]:
    """How far the exported weights trained: the checkpoint's stage, epochs and optimiser steps,
    the finished stages (``stages/*.json``) and the last epoch's metrics (``metrics.jsonl``)."""
    fs, root = resolve(run_dir)
    stages = {}
    for f in fs.get_file_info(pafs.FileSelector(f"{root}/stages", allow_not_found=True)):
        if f.base_name.endswith(".json"):
            stages[f.base_name[:-5]] = read_json(fs, f.path)["epochs"]
    lines = read_lines(fs, f"{root}/metrics.jsonl")
    epoch = saved.get("epoch")
    return {
        "checkpoint": redact(checkpoint),
        "stage": resolve(checkpoint)[1].rstrip("/").rsplit("/", 2)[-2],
        "epochs": None if epoch is None else epoch + 1,
        "steps": saved.get("state", {}).get("step"),
        "finished_stages": stages,
        "last_metrics": {k: v for k, v in lines[-1].items() if k != "checkpoint"} if lines else None,
    }


def load_model(cfg: TrainConfig, specs: dict[str, TensorSpec], state: dict[str, torch.Tensor]) -> nn.Module:
    """The method's model holding ``state``, built on the meta device (no random initialisation
    to throw away: seconds for the paper networks) and given the saved tensors. Only its state
    is exported, so buffers outside it (non-persistent ones) may stay on the meta device."""
    with torch.device("meta"):
        model = method_module(cfg.method_name).build(cfg, specs)
    model.load_state_dict(state, assign=True)
    return model.eval()


def recorded_data(run_dir: str) -> dict[str, Any] | None:
    """The run's ``data.json`` (:func:`raysup.train.data_identity`), or None if it has none."""
    fs, root = resolve(run_dir)
    return read_json(fs, f"{root}/data.json") if exists(fs, f"{root}/data.json") else None


def recorded_probes(run_dir: str) -> list[dict[str, Any]]:
    """The results ``raysup probe`` recorded for the run (``probes.jsonl``; none if never probed)."""
    fs, root = resolve(run_dir)
    return read_lines(fs, f"{root}/probes.jsonl")


def export(run_dir: str, encoder: str, out: str, *, data: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Write the run's encoder ``encoder`` to ``out`` (a local ``.pt`` file) and its card to
    ``out + ".json"``; returns the card. ``data``: the prepared set the model is built for
    (default: the one ``data.json`` records). Refused (ConfigError, FileExistsError,
    FileNotFoundError): an unknown encoder, an existing file without ``overwrite``, no checkpoint."""
    card_path = f"{out}.json"
    if "://" in out:
        raise ConfigError(f"--out: a local file, got {redact(out)} (copy the file and its card afterwards)")
    if out.endswith(".safetensors"):
        raise ConfigError("--out: safetensors is not installed with raysup; write a .pt file (torch.save of a plain state_dict)")
    for path in (out, card_path):
        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f"--out: {path} exists; choose another file or pass --overwrite")
    checkpoint = latest_checkpoint(run_dir)
    saved = load_checkpoint_file(checkpoint)  # read once (runner.open_run would read it again)
    cfg = load_config(saved["config"])
    recorded = recorded_data(run_dir)
    if data is None and recorded is None:
        raise ConfigError(f"--data: {redact(run_dir)} records no data (no data.json); give the prepared folder it trained on")
    prepared = runner.open_data(data or recorded["data"], cfg)
    model = load_model(cfg, prepared.specs, saved["model"])
    encoders = model.encoders()
    if encoder not in encoders:
        raise ConfigError(f"--encoder: {cfg.method_name} has no {encoder!r} encoder (it has: {', '.join(encoders)})")
    net, dim = encoders[encoder]
    arch = architecture(net, cfg.method_name, encoder, os.path.basename(card_path))
    state = {k.removeprefix(arch.prefix): v for k, v in net.state_dict().items()}
    file = os.path.basename(out)
    card = {
        "encoder": encoder,
        "file": file,
        "format": "torch.save of a state_dict {name: tensor}; torch.load(file, weights_only=True)",
        "architecture": {
            "name": arch.name,
            "code": f"{arch.code}\nnet.load_state_dict(torch.load({file!r}, weights_only=True), strict=True)\nnet.eval()",
            "features": f"{arch.call}  # [B,{dim}]",
        },
        "feature_dim": dim,
        "input": input_format(cfg, encoder, net, prepared.specs),
        "method": cfg.method_name,
        "preset": cfg.preset,
        "config": to_dict(cfg),
        "data": recorded,  # what it trained on (data.json), None if unrecorded
        "input_from": {"data": redact(prepared.uri), "prepare": prepared.manifest.get("params"),
                       "specs": {k: v.to_dict() for k, v in prepared.specs.items()}},  # the set the input shapes come from
        "trained": training_record(run_dir, checkpoint, saved),
        "probes": recorded_probes(run_dir),  # what ``raysup probe`` measured on this run, oldest first
        "versions": {"raysup": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__},
    }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    torch.save(state, f"{out}.tmp")
    os.replace(f"{out}.tmp", out)
    with open(f"{card_path}.tmp", "w") as f:
        json.dump(card, f, indent=1, default=str)
    os.replace(f"{card_path}.tmp", card_path)
    return card
