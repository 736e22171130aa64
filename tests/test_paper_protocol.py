"""``raysup probe --protocol paper``: each method's paper protocol (raysup/protocols.py).

Default run: the protocols' networks and features on CPU tensors (no Ray), cross-pixel
similarity's per-layer probes end to end on the 24-video set, and the refusals (~60 s with the
set's preparation, 2-core machine). Slow (Ray Train finetunings on the 180-video set: the
protocols' batches of 32-128 need more training clips than the 24-video set has; ~8 min):
``pytest -m slow tests/test_paper_protocol.py``."""
from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest
import torch

from raysup.audio_protocols import check_audio, evenly_spaced
from raysup.checkpoint import latest_checkpoint, load_checkpoint_file
from raysup.cli import main
from raysup.config import ConfigError, to_dict
from raysup.data.ingest import PreparedData
from raysup.data.prepare import PrepareConfig
from raysup.data.schema import TensorSpec
from raysup.data.transforms import audio_input
from raysup.image_protocols import VOCNet, multilabel_loss, read_voc, run_image_layer_probe, run_voc, voc_map
from raysup.methods import METHODS, make_config, method_module
from raysup.methods.cpfs import CONV_SIZES
from raysup.protocol_specs import AudioClipsProtocol, FrozenProtocol, ImageLayerProbeProtocol, LayerProbeProtocol, VOCProtocol
from raysup.protocols import (
    build_caffenet,
    build_finetune,
    build_tap_features,
    epoch_size,
    finetune_epochs,
    frozen_scores,
    paper_protocols,
    protocol_taps,
    video_accuracy,
)

CONV_LAYERS = [tap for tap, _ in CONV_SIZES]

SPECS = {"frames": TensorSpec((8, 32, 32, 3), "uint8"), "audio": TensorSpec((40, 64), "float16"),
         "flow": TensorSpec((7, 32, 32, 2), "float16"), "motion": TensorSpec((), "float32")}  # fmt: skip
CONV = ["probe", "--protocol", "paper", "--json"]


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_gdt_audio_features_are_conv5_max_pooled_over_time():
    torch.manual_seed(0)
    net = build_tap_features(make_config("gdt", "paper"), SPECS, taps=protocol_taps(METHODS["gdt"].PAPER_PROTOCOLS[1])).eval()
    audio = torch.randn(2, 40, 100)  # 1 s of 40-mel frames at 10 ms
    with torch.no_grad():
        feats = net.embed({"audio": audio})["audio"]
        body = net.inner.audio.body  # ResNet-18: conv5 maps [2,512,2,4] (÷32)
        x = body.maxpool(body.relu(body.bn1(body.conv1(net.inner.audio_transform(audio, train=False)))))
        conv5 = body.layer4(body.layer3(body.layer2(body.layer1(x))))
    assert conv5.shape == (2, 512, 2, 4) and feats.shape == (2, 512 * 2 * 1)  # kernel (1,3) stride (1,2): 4 frames → 1
    assert torch.allclose(feats, conv5[..., :3].amax(-1).flatten(1))
    # the run's weights load as they are (the wrapper delegates to the method)
    state = method_module("gdt").build(make_config("gdt", "paper"), SPECS).state_dict()
    net.load_state_dict(state)
    assert torch.equal(net.inner.audio.body.conv1.weight, state["audio.body.conv1.weight"])


def test_cpfs_layer_probes_read_zhang_et_al_sizes():
    specs = {"frames": TensorSpec((6, 224, 224, 3), "uint8"), "flow": TensorSpec((5, 224, 224, 2), "float16")}
    net = build_tap_features(make_config("cpfs", "paper"), specs, taps=protocol_taps(METHODS["cpfs"].PAPER_PROTOCOLS[0])).eval()
    with torch.no_grad():
        feats = net.embed({"frames": torch.randint(0, 256, (2, 6, 224, 224, 3), dtype=torch.uint8)})
    assert {k: v.shape[1] for k, v in feats.items()} == {
        "rgb_conv1": 96 * 10 * 10, "rgb_conv2": 256 * 6 * 6, "rgb_conv3": 384 * 5 * 5, "rgb_conv4": 384 * 5 * 5, "rgb_conv5": 256 * 6 * 6,
    }  # fmt: skip


def test_cross_and_learn_caffenet_starts_from_the_rgb_conv_and_bn_layers_with_fresh_fc_layers():
    cfg = make_config("cross_and_learn", "tiny")
    pretrained = method_module("cross_and_learn").build(cfg, SPECS)
    for p in pretrained.parameters():
        torch.nn.init.normal_(p)  # unlike any fresh init
    net = build_caffenet(cfg, SPECS, classes=6, init_prefix=METHODS["cross_and_learn"].PAPER_PROTOCOLS[0].init_prefix)
    net.load_pretrained(pretrained.state_dict())
    src, dst = pretrained.rgb_net.features.state_dict(), net.features.state_dict()
    assert src.keys() == dst.keys() and all(torch.equal(src[k], dst[k]) for k in src)  # conv and BN, running stats too
    fcs = [m for m in net.classifier if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in fcs] == [256, 256, 6]  # fc6, fc7, fc8
    assert not torch.equal(fcs[0].weight, pretrained.rgb_net.fc6[1].weight)
    net.train()
    out = net({"frames": torch.randint(0, 256, (4, 8, 32, 32, 3), dtype=torch.uint8), "label": torch.tensor([0, 1, 2, 3])})
    out["loss"].backward()
    assert net.features[0].weight.grad is not None  # finetuned end to end


def test_xdc_fc_only_trains_the_head_on_a_frozen_encoder_in_eval_mode():
    cfg = make_config("xdc", "tiny")
    full = build_finetune(cfg, SPECS, encoder="video", full=True, classes=6).train()
    fc = build_finetune(cfg, SPECS, encoder="video", full=False, classes=6).train()
    assert [n for n, p in fc.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    assert not fc.inner.training and fc.head.training  # frozen BN statistics
    assert all(p.requires_grad for p in full.inner.video.parameters()) and not any(p.requires_grad for p in full.inner.audio.parameters())
    assert full.inner.training
    keys = {p.key: p.task for p in METHODS["xdc"].PAPER_PROTOCOLS}
    assert keys == {"video": "action", "video_fc": "action", "esc50": "esc50", "esc50_fc": "esc50", "dcase": "dcase"}


def test_xdc_audio_encoder_alone_serves_an_audio_only_set():
    """ESC-50 finetuning and DCASE's conv5 features (papers/xdc.md Table 11 L417, L199) on a
    prepared --audio-only set: batches without frames reach the audio encoder alone."""
    torch.manual_seed(0)
    cfg, specs = make_config("xdc", "tiny"), {"audio": SPECS["audio"]}
    batch = {"audio": torch.randn(4, 40, 64), "label": torch.tensor([0, 1, 2, 0])}
    xdc = method_module("xdc").build(cfg, specs).eval()
    with torch.no_grad():
        feats, taps = xdc.embed(batch), xdc.taps(batch)
        maps = xdc.audio.conv5_maps(audio_input(batch["audio"]))  # [4,C,M',F']
    assert set(feats) == {"audio"} and set(taps) == {"audio_conv5"} and torch.equal(taps["audio_conv5"], feats["audio"])
    # conv5 maps globally average-pooled: the encoder's own output (pooling: ours, the paper is silent)
    assert taps["audio_conv5"].shape == (4, xdc.audio.out_dim) and torch.allclose(taps["audio_conv5"], maps.mean((2, 3)), atol=1e-4)
    for full in (True, False):  # esc50 and esc50_fc
        net = build_finetune(cfg, specs, encoder="audio", full=full, classes=3).train()
        trained = {n.split(".")[0] if n.startswith("head") else n.split(".")[1] for n, q in net.named_parameters() if q.requires_grad}
        assert trained == ({"head", "audio"} if full else {"head"})
    with torch.no_grad():
        assert net.eval().logits(batch).shape == (4, 3)


def test_a_finetuning_epoch_is_the_papers_number_of_clips_drawn_from_the_train_split(ray_session, capsys):
    """XDC's es (Table 11, papers/xdc.md L415-417): UCF101 106K, HMDB51 40K, ESC50 20K clips per
    epoch, the set told by its classes (L97); each train clip repeated, mean clips / train clips."""
    import pyarrow as pa
    import ray

    video, _, esc, _, _ = METHODS["xdc"].PAPER_PROTOCOLS
    assert [epoch_size(video, c, None) for c in (101, 51)] == [106_000, 40_000] and epoch_size(esc, 50, None) == 20_000
    assert epoch_size(video, 101, 64) == 64 and epoch_size(video, 101, 0) == 0 and capsys.readouterr().err == ""
    assert epoch_size(video, 6, None) == 0  # another set: one pass, said on stderr
    assert "video: one pass over the train clips per epoch; the paper's epoch sizes are for UCF101 (101 classes): 106000" in capsys.readouterr().err
    train = ray.data.from_arrow(pa.table({"video_id": [f"v{i // 4}" for i in range(40)], "clip_index": [i % 4 for i in range(40)]}))

    def epoch(clips: int) -> tuple[int, list[tuple[str, int]]]:
        ds, rows = finetune_epochs(train, 40, clips, "video")
        return rows, sorted(zip(*ds.to_pandas()[["video_id", "clip_index"]].to_dict("list").values()))

    keys = sorted((f"v{i // 4}", i % 4) for i in range(40))
    assert epoch(120) == (120, sorted(keys * 3))  # 3 × the train clips: each clip 3 times
    rows, a = epoch(50)  # 1.25 ×: each clip once or twice (repeat_rows: unseeded, so drawn anew every epoch)
    assert rows == 50 and set(a) == set(keys) and 40 <= len(a) <= 80 and max(a.count(k) for k in keys) == 2
    assert finetune_epochs(train, 40, 0, "video") == (train, 40)  # one pass: the train clips as they are
    for bad, match in ((4001, "would draw each of the 40 train clips ~100 times; at most 100"), (-1, "must be >= 0")):
        with pytest.raises(ConfigError, match=f"--paper-epoch-clips: .*{match}"):
            finetune_epochs(train, 40, bad, "video")


def test_frozen_classifiers_average_clip_scores_per_video():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 3
    y_train = np.repeat(np.arange(3), 20)
    x_train = centres[y_train] + rng.normal(size=(60, 16))
    test_video = np.repeat(np.arange(6), 3)  # 6 test videos of 3 clips
    y = np.array([0, 1, 2, 0, 1, 2])
    x_test = centres[y[test_video]] + rng.normal(size=(18, 16))
    p = METHODS["gdt"].PAPER_PROTOCOLS[1]
    assert isinstance(p, FrozenProtocol) and (p.linear.lr, p.linear.weight_decay, p.linear.batch_size, p.svm_c) == (1e-4, 5e-4, 512, 0.01)
    p = dataclasses.replace(p, linear=dataclasses.replace(p.linear, epochs=3000))  # 60 rows: one step of lr 1e-4 per epoch
    for classifier in ("linear", "svm"):
        scores = frozen_scores(p, classifier, x_train, y_train, x_test, 3, seed=0)
        assert scores.shape == (18, 3) and video_accuracy(scores, test_video, y, np.ones(6, bool)) == 1.0
    # cpfs' per-layer probe: Zhang et al.'s SGD softmax layer on standardised features, far from
    # the origin here (what the standardisation is for)
    probe = METHODS["cpfs"].PAPER_PROTOCOLS[0]
    assert isinstance(probe, LayerProbeProtocol) and probe.linear.standardize
    z = probe.linear  # Zhang et al.'s solver.prototxt: SGD, 140K iterations of 256 (28 ImageNet epochs), lr ×0.1 every 40K
    assert (z.optimizer, z.lr, z.momentum, z.weight_decay, z.batch_size, z.epochs) == ("sgd", 0.01, 0.9, 5e-4, 256, 28)
    assert [round(f * z.epochs) for f in z.milestones] == [8, 16, 24] and z.gamma == 0.1
    scores = frozen_scores(probe, "linear", x_train + 50, y_train, x_test + 50, 3, seed=0)
    assert video_accuracy(scores, test_video, y, np.ones(6, bool)) == 1.0
    # one clip of each video scored wrong: averaging over the video's clips still gets it right
    scores = np.eye(3)[y[test_video]]
    scores[::3] = np.eye(3)[(y + 1) % 3]
    assert video_accuracy(scores, test_video, y, np.ones(6, bool)) == 1.0
    assert (scores.argmax(1) == y[test_video]).mean() < 1


def test_cpfs_paper_protocol_probes_each_conv_layer(small_prepared, tmp_path, capsys):
    data, labels = small_prepared
    run = str(tmp_path / "cpfs")  # a run's checkpoint, untrained: the protocol's mechanics, not learning
    cfg = make_config("cpfs", "tiny")
    ckpt = tmp_path / "cpfs" / "checkpoint_000000"
    ckpt.mkdir(parents=True)
    torch.save({"model": method_module("cpfs").build(cfg, PreparedData(data).cropped(cfg.crop_size).specs).state_dict(), "config": to_dict(cfg)},
               ckpt / "checkpoint.pt")
    assert main([*CONV[:1], run, "--data", data, "--labels", labels, *CONV[1:]]) == 0
    acc = last_json(capsys)
    assert sorted(acc) == CONV_LAYERS and all(0 <= v <= 1 for v in acc.values())
    # the refusals are one line each, exit 2
    for bad in (["--labels", labels, "--splits", labels, *CONV[1:]], ["--splits", labels]):
        assert main([*CONV[:1], run, "--data", data, *bad]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_paper_protocol_of_a_method_without_one_is_refused():
    with pytest.raises(ConfigError, match=r"--protocol paper: not implemented for supervised \(only cpfs, cpfs_direct, cross_and_learn, gdt, xdc\)"):
        paper_protocols("supervised")


@pytest.mark.slow
def test_gdt_paper_protocol_finetunes_video_through_fit_and_probes_audio(prepared, tmp_path, capsys):
    data, labels = prepared[0].uri, prepared[1]
    run = str(tmp_path / "gdt")
    assert main(["train", "gdt", "--data", data, "--out", run, "--set", "epochs=1", "--set", "batch_size=8"]) == 0
    pretrained = latest_checkpoint(run)
    capsys.readouterr()
    probe = ["probe", run, "--data", data, "--labels", labels, "--protocol", "paper", "--paper-epochs", "2", "--json"]
    assert main(probe) == 0
    acc = last_json(capsys)
    assert set(acc) == {"video", "audio"} and all(0 <= v <= 1 for v in acc.values())
    ft = f"{run}.paper_protocol/video"
    lines = [json.loads(line) for line in open(os.path.join(ft, "metrics.jsonl"))]
    assert [m["epoch"] for m in lines] == [0, 1] and all(0 <= m["acc"] <= 1 for m in lines)
    saved = load_checkpoint_file(latest_checkpoint(ft))
    p = METHODS["gdt"].PAPER_PROTOCOLS[0]
    assert saved["config"]["optim"]["lr"] == p.optim.lr and saved["config"]["batch_size"] == p.batch_size
    assert list(saved["config"]["optim"]["milestones"]) == [0.6, 0.8] and saved["config"]["optim"]["weight_decay"] == 5e-3
    # the finetuned encoder started from the pretrained one; the pretraining run is untouched
    assert latest_checkpoint(run) == pretrained
    # rerunning resumes the finished finetuning (no epoch trained twice) and scores again
    assert main(probe) == 0
    assert last_json(capsys) == acc
    assert len(open(os.path.join(ft, "metrics.jsonl")).read().splitlines()) == 2
    # DCASE's classifier: a linear SVM on the same features
    assert main([*probe, "--paper-classifier", "svm"]) == 0
    svm = last_json(capsys)
    assert svm["video"] == acc["video"] and 0 <= svm["audio"] <= 1
    assert main([*probe, "--random-init"]) == 0
    random = last_json(capsys)
    assert os.path.isdir(f"{run}.paper_protocol/random_init/video")
    assert acc["audio"] > random["audio"] + 0.1  # learning: measured 0.83-0.90 vs 0.52 (2026-12-03)
    print(f"gdt paper protocol: {acc}, audio with the SVM {svm['audio']:.3f}; random init: {random}")


@pytest.mark.slow
def test_xdc_paper_protocol_full_and_fc_only(prepared, tmp_path, capsys):
    data, labels = prepared[0].uri, prepared[1]
    run = str(tmp_path / "xdc")
    assert main(["train", "xdc", "--data", data, "--out", run, "--set", "epochs=1", "--set", "method.rounds=1", "--set", "batch_size=16"]) == 0
    capsys.readouterr()
    assert main(["probe", run, "--data", data, "--labels", labels, "--protocol", "paper", "--paper-epochs", "2", "--json"]) == 0
    acc = last_json(capsys)
    assert set(acc) == {"video", "video_fc"} and all(0 <= v <= 1 for v in acc.values())
    pretrained = load_checkpoint_file(latest_checkpoint(run))["model"]
    full = load_checkpoint_file(latest_checkpoint(f"{run}.paper_protocol/video"))["model"]
    fc = load_checkpoint_file(latest_checkpoint(f"{run}.paper_protocol/video_fc"))["model"]
    stem = "video.body.0.weight"
    assert torch.equal(fc[f"inner.{stem}"], pretrained[stem])  # fc-only: the encoder did not move
    assert not torch.equal(full[f"inner.{stem}"], pretrained[stem])  # full finetuning: it did
    bn = "video.body.1.running_mean"
    assert torch.equal(fc[f"inner.{bn}"], pretrained[bn])  # nor did its BN statistics
    print(f"xdc paper protocol: {acc}")


@pytest.mark.slow
def test_cross_and_learn_paper_protocol_finetunes_a_caffenet(prepared, tmp_path, capsys):
    data, labels = prepared[0].uri, prepared[1]
    run = str(tmp_path / "cal")
    assert main(["train", "cross_and_learn", "--data", data, "--out", run, "--set", "epochs=1", "--set", "batch_size=32"]) == 0
    capsys.readouterr()
    probe = ["probe", run, "--data", data, "--protocol", "paper", "--paper-epochs", "3", "--json"]
    assert main([*probe, "--labels", labels]) == 0
    acc = last_json(capsys)
    assert set(acc) == {"rgb", "flow"} and all(0 <= v <= 1 for v in acc.values())  # the run's motion network: flow (Table 3, L189)
    # "over the three splits": one finetuning per labels CSV, the mean of their top-1
    other = tmp_path / "split2.csv"
    rows = open(labels).read().splitlines()
    swap = {"train": "test", "test": "train"}
    other.write_text("\n".join([rows[0]] + [f"{r.rsplit(',', 1)[0]},{swap[r.rsplit(',', 1)[1]]}" for r in rows[1:]]) + "\n")
    assert main([*probe, "--splits", labels, str(other)]) == 0
    mean = last_json(capsys)
    assert os.path.isdir(f"{run}.paper_protocol/split1/rgb") and os.path.isdir(f"{run}.paper_protocol/split2/rgb")
    assert set(mean) == {"rgb", "flow"} and all(0 <= v <= 1 for v in mean.values())
    saved = load_checkpoint_file(latest_checkpoint(f"{run}.paper_protocol/rgb"))
    assert saved["config"]["batch_size"] == 128 and saved["config"]["optim"]["lr"] == 0.01
    assert list(saved["config"]["optim"]["milestones"]) == [0.75]
    print(f"cross_and_learn paper protocol: {acc}")


# --- the image protocols (raysup/image_protocols.py) on generated folders -------------------------
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230)]


def noisy_image(rng, classes: list[int], size: int = 40):
    """A PIL image of noise with a 16 px square of class c's colour in corner c, for each c of
    ``classes``: the learnable signal (the networks standardise each channel, so the square's
    place carries it, not the image's tint)."""
    from PIL import Image

    img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
    for c in classes:
        y, x = (c // 2) * (size - 18) + 1, (c % 2) * (size - 18) + 1
        img[y : y + 16, x : x + 16] = COLOURS[c]
    return Image.fromarray(img)


def make_image_folder(root, rng, per_class=(8, 4)) -> str:
    """torchvision's ImageFolder layout: root/{train,val}/<class>/<n>.png, two classes."""
    for split, n in zip(("train", "val"), per_class):
        for c in range(2):
            os.makedirs(root / split / f"class{c}", exist_ok=True)
            for i in range(n):
                noisy_image(rng, [c]).save(root / split / f"class{c}" / f"{i}.png")
    return str(root)


def make_voc(root, rng, counts=(12, 8)) -> np.ndarray:
    """A PASCAL VOC layout: JPEGImages/<id>.jpg, ImageSets/Main/<class>_{trainval,test}.txt
    (1 present, -1 absent, 0 difficult: every test image's third class is marked difficult);
    each present class is a coloured square. Returns the test labels [N,3]."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    names = ["aeroplane", "bicycle", "bird"]
    for split, n in zip(("trainval", "test"), counts):
        labels = np.where(rng.random((n, 3)) < 0.5, 1, -1)
        labels[np.arange(n), np.arange(n) % 3] = 1  # every image has a class
        if split == "test":
            labels[:2, 2] = 0
        for i in range(n):
            noisy_image(rng, [c for c in range(3) if labels[i, c] != -1]).save(root / "JPEGImages" / f"{split}{i:03d}.jpg")
        for c, name in enumerate(names):
            (root / "ImageSets" / "Main" / f"{name}_{split}.txt").write_text("".join(f"{split}{i:03d} {labels[i, c]:2d}\n" for i in range(n)))
    return labels


def fake_run(tmp_path, method: str):
    """A run folder with a freshly built (untrained) model's checkpoint: the protocols' mechanics."""
    cfg = make_config(method, "tiny")
    ckpt = tmp_path / method / "checkpoint_000000"
    ckpt.mkdir(parents=True)
    torch.save({"model": method_module(method).build(cfg, SPECS).state_dict(), "config": to_dict(cfg)}, ckpt / "checkpoint.pt")
    return str(tmp_path / method)


def test_cpfs_imagenet_layer_probe_learns_colour_on_a_generated_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    root = make_image_folder(tmp_path / "imagenet", rng)
    p = METHODS["cpfs"].PAPER_PROTOCOLS[1]
    assert isinstance(p, ImageLayerProbeProtocol) and p.linear == METHODS["cpfs"].ZHANG_LINEAR and dict(p.sizes) == dict(CONV_SIZES)
    assert dict(p.published) == {"conv1": 15.0, "conv2": 24.8, "conv3": 28.9, "conv4": 29.4, "conv5": 28.0}  # papers/cpfs.md L220
    # the paper's 224 crops of 256 cost seconds per image on a 2-core CPU; batches of 4 of the 16 images
    small = dataclasses.replace(p, crop=32, resize=36, linear=dataclasses.replace(p.linear, batch_size=4))
    acc = run_image_layer_probe(small, make_config("cpfs", "tiny"), None, root, epochs=3)
    assert sorted(acc) == CONV_LAYERS and all(0 <= v <= 1 for v in acc.values())
    assert acc["rgb_conv1"] == 1.0  # colour is linearly separable in conv1, even untrained


@pytest.mark.parametrize("method", ["cpfs", "cross_and_learn"])
def test_voc07_classification_finetunes_the_pretrained_network(tmp_path, method):
    rng = np.random.default_rng(0)
    make_voc(tmp_path / "voc", rng)
    cfg = make_config(method, "tiny")
    p = next(p for p in METHODS[method].PAPER_PROTOCOLS if isinstance(p, VOCProtocol))
    assert (p.lr, p.iterations, p.step, p.gamma, p.test_crops) == (1e-3, 80_000, 10_000, 0.5, 10)  # cpfs.md L234; Krähenbühl's train_cls.py
    assert (p.batch_size, p.weight_decay, p.clip_grad, p.scale) == (16, 1e-6, 10.0, (0.5, 2.0))  # train_cls.py
    state = method_module(method).build(cfg, SPECS).state_dict()
    for k, v in state.items():  # unlike any fresh init; variances positive
        if v.is_floating_point():
            torch.nn.init.uniform_(v, 0.5, 1.5) if k.endswith("running_var") else torch.nn.init.normal_(v, 0, 0.1)
    net = VOCNet(dataclasses.replace(p, crop=32), cfg, state, classes=3)
    if method == "cross_and_learn":  # L141: the conv layers transferred, not the BN layers
        src = {k.removeprefix("rgb_net.features."): v for k, v in state.items() if k.startswith("rgb_net.features.")}
        dst = net.trunk[0].state_dict()
        assert torch.equal(dst["0.weight"], src["0.weight"]) and not torch.equal(dst["1.weight"], src["1.weight"])
        assert not torch.equal(dst["1.running_mean"], src["1.running_mean"])
    else:  # cpfs: its AlexNet with BN folded (L154), conv1-fc7 kept
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    result = run_voc(dataclasses.replace(p, crop=32, test_crops=2, batch_size=4), cfg, state, str(tmp_path / "voc"), iterations=2)
    assert set(result) == {"voc07_cls"} and 0 <= result["voc07_cls"] <= 1


def test_voc_labels_and_map_ignore_difficult_images(tmp_path):
    labels = make_voc(tmp_path / "voc", np.random.default_rng(0))
    ids, classes, read = read_voc(str(tmp_path / "voc"), "test")
    assert classes == ["aeroplane", "bicycle", "bird"] and ids[0] == "test000" and np.array_equal(read, labels)
    scores = (labels > 0).astype(float)
    scores[labels == 0] = -5.0  # difficult images scored wrong: not counted
    assert voc_map(scores, labels) == 1.0
    assert voc_map(-scores, labels) < 0.7
    logits = torch.zeros(2, 3)
    y = torch.tensor([[1, -1, 0], [0, 0, 0]])
    assert torch.isclose(multilabel_loss(logits, y), torch.tensor(math.log(2)))  # two known labels, each log 2
    y2 = torch.tensor([[1, -1, 1], [0, 0, 0]])
    assert multilabel_loss(logits + torch.tensor([0, 0, 9.0]), y2) < multilabel_loss(logits, y2)


def test_image_protocols_through_the_cli_refuse_a_missing_folder_in_one_line(tmp_path, capsys):
    run = fake_run(tmp_path, "cpfs")
    probe = ["probe", run, "--protocol", "paper", "--json"]
    for task, needs in (("voc07", "ImageSets/Main"), ("imagenet", "train/ and val/")):
        assert main([*probe, "--data", str(tmp_path / "nowhere"), "--paper-task", task]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needs in err[0]
    assert main([*probe, "--data", str(tmp_path), "--paper-task", "voc07", "--labels", "l.csv"]) == 2
    assert "drop --labels/--splits" in capsys.readouterr().err
    assert main([*probe, "--data", str(tmp_path), "--paper-task", "esc50"]) == 2  # cpfs has no audio protocol
    assert "cpfs's paper protocols are for action, imagenet, voc07, not esc50" in capsys.readouterr().err


@pytest.mark.slow
def test_cpfs_image_protocols_at_the_papers_sizes_through_the_cli(tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = make_image_folder(tmp_path / "imagenet", rng)
    make_voc(tmp_path / "voc", rng)
    run = fake_run(tmp_path, "cpfs")
    probe = ["probe", run, "--protocol", "paper", "--paper-epochs", "3", "--json"]
    assert main([*probe, "--data", images, "--paper-task", "imagenet"]) == 0
    acc = last_json(capsys)
    assert sorted(acc) == CONV_LAYERS and all(0 <= v <= 1 for v in acc.values())
    assert main([*probe, "--data", str(tmp_path / "voc"), "--paper-task", "voc07", "--random-init"]) == 0
    assert set(last_json(capsys)) == {"voc07_cls"}
    assert json.loads(open(os.path.join(run, "probes.jsonl")).read().splitlines()[-1])["labels"] == [str(tmp_path / "voc")]


# --- the audio protocols (raysup/audio_protocols.py) -------------------------------------------------


def test_audio_protocols_take_evenly_spaced_sub_clips_of_the_papers_length(small_prepared):
    esc, dcase = (p for p in METHODS["gdt"].PAPER_PROTOCOLS if isinstance(p, AudioClipsProtocol))
    assert (esc.task, esc.clips, esc.seconds, esc.classifier, esc.linear.lr, esc.linear.weight_decay, esc.linear.batch_size) == (
        "esc50", 10, 2.0, "linear", 1e-4, 5e-4, 512)  # papers/gdt.md L164, L324
    assert (dcase.task, dcase.clips, dcase.seconds, dcase.classifier, dcase.svm_c) == ("dcase", 60, 1.0, "svm", 0.01)  # L164, L324
    assert dict(esc.published) == {"ESC-50, Kinetics-400 pretraining": 78.6} and dict(dcase.published) == {"DCASE2014, Kinetics-400 pretraining": 94.0}
    assert evenly_spaced(13, 10).tolist() == [0, 1, 3, 4, 5, 7, 8, 9, 11, 12] and evenly_spaced(10, 10).tolist() == list(range(10))
    data = PreparedData(small_prepared[0])  # 1 s clips (8 frames at 8 fps), 2 per video
    counts = data.video_clips
    with pytest.raises(ConfigError, match="the paper's sub-clips are 2 s, the prepared audio windows 1 s"):
        check_audio(esc, data, counts)
    with pytest.raises(ConfigError, match="has 2 prepared clips, the protocol takes 60 evenly spaced ones"):
        check_audio(dcase, data, counts)
    # XDC's: ESC-50 finetuned on 2 s clips, 10 test clips per recording (papers/xdc.md L103, Table 11 L417); DCASE 60 clips (L199)
    for p in METHODS["xdc"].PAPER_PROTOCOLS[2:]:
        with pytest.raises(ConfigError, match=f"--paper-task {p.task}: the paper's sub-clips are 2 s, the prepared audio windows 1 s"):
            check_audio(p, data, counts)
        with pytest.raises(ConfigError, match=f"has 2 prepared clips, the protocol takes {getattr(p, 'clips', 10)} evenly spaced"):
            check_audio(dataclasses.replace(p, seconds=1.0), data, counts)


def write_tone_wav(path, freq: float, seconds: float, sr: int = 16000) -> None:
    """A real 16-bit mono WAV: a tone of ``freq`` Hz in a little noise."""
    import wave

    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * np.random.default_rng(int(freq)).normal(size=t.size)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((x * 32767).astype("<i2").tobytes())


def audio_set(tmp_path, task: str, seconds: float, window: float, stride: float) -> tuple[str, list[str]]:
    """A prepared audio-only set of 12 generated recordings of ``seconds`` (3 tones, 4 each), in
    ``window`` s clips every ``stride`` s, and two labels CSVs (fold k the test split of CSV k, as
    ESC-50's five folds)."""
    from raysup.data.prepare import prepare

    src = tmp_path / f"{task}_audio"
    src.mkdir()
    folds = {1: [], 2: []}
    for c, freq in enumerate((300, 900, 2500)):
        for i in range(4):
            write_tone_wav(src / f"c{c}_{i}.wav", freq * (1 + 0.02 * i), seconds)
            folds[1 + i % 2].append((f"c{c}_{i}", f"class{c}"))
    out = str(tmp_path / f"{task}_prepared")
    prepare(str(src), out, PrepareConfig(audio_only=True, audio_seconds=window, clip_stride_s=stride, clip_frames=8, fps=20.0))  # strides: whole frames
    csvs = []
    for k in (1, 2):
        path = tmp_path / f"{task}_fold{k}.csv"
        path.write_text("video_id,label,split\n" + "".join(f"{v},{y},{'test' if f == k else 'train'}\n" for f, vs in folds.items() for v, y in vs))
        csvs.append(str(path))
    return out, csvs


@pytest.mark.slow
def test_gdt_esc50_and_dcase_protocols_on_generated_audio_sets(ray_session, tmp_path, capsys):
    run = fake_run(tmp_path, "gdt")
    sets = {"esc50": (5.0, 2.0, 0.25), "dcase": (8.0, 1.0, 0.1)}  # recording s, window s, stride s: 13 and 71 windows
    for task, (seconds, window, stride) in sets.items():
        out, csvs = audio_set(tmp_path, task, seconds, window, stride)
        capsys.readouterr()
        assert main(["probe", run, "--data", out, "--splits", *csvs, "--protocol", "paper", "--paper-task", task, "--json"]) == 0
        acc = last_json(capsys)
        assert set(acc) == {task} and acc[task] > 0.6  # three tones, untrained features: DCASE measured 1.0 (2026-12-06)
        with capsys.disabled():
            print(f"{task}: {acc}")


@pytest.mark.slow
def test_xdc_esc50_finetuning_and_dcase_svm_on_generated_audio_sets(ray_session, tmp_path, capsys):
    """XDC's audio encoder alone on audio-only sets: ESC-50 finetuned through fit, full and
    FC-only (Table 11 L417; epochs of --paper-epoch-clips clips drawn from the train split), and
    DCASE's linear SVM on conv5 features of 60 evenly spaced 2 s clips (L199)."""
    run = fake_run(tmp_path, "xdc")
    esc, csvs = audio_set(tmp_path, "esc50", 5.0, 2.0, 0.25)  # 13 windows per recording, 10 tested
    capsys.readouterr()
    probe = ["probe", run, "--data", esc, "--labels", csvs[0], "--protocol", "paper", "--paper-task", "esc50", "--json"]
    assert main([*probe, "--paper-epochs", "2", "--paper-epoch-clips", "64"]) == 0  # 78 train clips: 64 drawn per epoch, 2 steps of 32
    acc = last_json(capsys)
    assert set(acc) == {"esc50", "esc50_fc"} and all(0 <= v <= 1 for v in acc.values())
    pretrained = load_checkpoint_file(latest_checkpoint(run))["model"]
    stem = "audio.body.0.weight"
    for key, moved in (("esc50", True), ("esc50_fc", False)):
        saved = load_checkpoint_file(latest_checkpoint(f"{run}.paper_protocol/{key}"))
        assert (saved["config"]["batch_size"], saved["config"]["epochs"], saved["config"]["optim"]["weight_decay"]) == (32, 2, 5e-3)
        assert torch.equal(saved["model"][f"inner.{stem}"], pretrained[stem]) != moved  # full: the audio encoder trained; FC-only: not
        lines = [json.loads(line) for line in open(os.path.join(f"{run}.paper_protocol/{key}", "metrics.jsonl"))]
        assert [m["epoch"] for m in lines] == [0, 1]
    # the paper's 20K clips per epoch are ESC-50's (50 classes); 3 classes here: one pass, said on stderr
    assert main([*probe, "--paper-epochs", "1", "--random-init"]) == 0  # in RUN.paper_protocol/random_init/
    assert "the paper's epoch sizes are for ESC50 (50 classes): 20000, not 3 classes" in capsys.readouterr().err
    dcase, dcsvs = audio_set(tmp_path, "dcase", 8.0, 2.0, 0.1)  # 61 windows of 2 s per recording, 60 taken
    assert main(["probe", run, "--data", dcase, "--splits", *dcsvs, "--protocol", "paper", "--paper-task", "dcase", "--json"]) == 0
    svm = last_json(capsys)
    assert set(svm) == {"dcase"} and svm["dcase"] > 0.6  # three tones, untrained features
    with capsys.disabled():
        print(f"xdc esc50: {acc}, dcase: {svm}")


def test_config_protocol_prints_every_protocol_with_its_published_numbers_and_lines(capsys):
    assert main(["config", "gdt", "--preset", "paper", "--protocol"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(p["kind"], p["task"]) for p in out] == [("FinetuneProtocol", "action"), ("FrozenProtocol", "action"),
                                                     ("AudioClipsProtocol", "esc50"), ("AudioClipsProtocol", "dcase")]
    video, _, esc, dcase = out
    assert video["optim"]["lr"] == 0.02 and video["optim"]["warmup_from"] == 0.0025 / 0.02 and video["cites"]["optim"] == "papers/gdt.md L322"
    assert video["published"] == {"UCF101 3 splits, Kinetics-400 pretraining": 88.7, "HMDB51 3 splits, Kinetics-400 pretraining": 57.8}
    assert (esc["clips"], esc["seconds"], esc["linear"]["lr"]) == (10, 2.0, 1e-4) and dcase["svm_c"] == 0.01
    assert main(["config", "cpfs_direct", "--preset", "paper", "--protocol"]) == 0
    direct = {p["task"]: p for p in json.loads(capsys.readouterr().out)}
    assert direct["voc07"]["published"] == {"VOC07 cls mAP": 61.4} and direct["imagenet"]["published"]["conv5"] == 23.0  # cpfs.md L188, L221
    assert main(["config", "supervised", "--protocol"]) == 2
    assert "not implemented for supervised" in capsys.readouterr().err
    # the probe's tasks: each runs its own protocols only
    assert [p.task for p in paper_protocols("gdt")] == ["action", "action"]
    assert [p.key for p in paper_protocols("cross_and_learn", "voc07")] == ["voc07_cls"]
    assert [p.key for p in paper_protocols("xdc", "esc50")] == ["esc50", "esc50_fc"] and [p.key for p in paper_protocols("xdc", "dcase")] == ["dcase"]
    # XDC's epoch sizes (Table 11 L415-417) and DCASE protocol (L199), as a user checks them
    assert main(["config", "xdc", "--preset", "paper", "--protocol"]) == 0
    xdc = {p["key"]: p for p in json.loads(capsys.readouterr().out)}
    assert xdc["video"]["epoch_clips"] == {"UCF101": 106_000, "HMDB51": 40_000} and xdc["esc50"]["epoch_clips"] == {"ESC50": 20_000}
    assert xdc["esc50"]["cites"]["epoch_clips"] == "Table 11 L415-417: es" and xdc["dcase"]["cites"]["clips"] == "papers/xdc.md L199"


def test_xdc_lr_cv_refuses_long_clips_for_audio_in_one_line(tmp_path, capsys):
    """experiments/xdc_finetune_lr_cv.py --audio: Table 7's 32-frame stage is the video encoder's."""
    import runpy

    script = runpy.run_path(os.path.join(os.path.dirname(__file__), "..", "experiments", "xdc_finetune_lr_cv.py"))
    with pytest.raises(SystemExit) as e:
        script["main"]([str(tmp_path / "run"), "--data", str(tmp_path), "--labels", "l.csv", "--audio", "--long-clips"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "--long-clips" in err[0] and "Traceback" not in err[0]


@pytest.mark.slow
def test_xdc_esc50_lr_cross_validation_on_a_generated_audio_set(ray_session, tmp_path):
    """experiments/xdc_finetune_lr_cv.py --audio: Table 12's lr search for ESC-50 (Table 11 L417)
    on XDC's audio encoder, a 2-value grid as Tune trials on held-out train recordings, then the
    best lr finetuned and tested (run by hand)."""
    import runpy

    run = fake_run(tmp_path, "xdc")
    esc, csvs = audio_set(tmp_path, "esc50", 5.0, 2.0, 0.25)
    script = runpy.run_path(os.path.join(os.path.dirname(__file__), "..", "experiments", "xdc_finetune_lr_cv.py"))
    result = script["main"]([run, "--data", esc, "--labels", csvs[0], "--audio", "--lrs", "0.001,0.01", "--epochs", "1", "--val-fraction", "0.5",
                              "--batch-size", "4", "--max-concurrent", "1"])
    assert result["protocol"] == "esc50" and set(result["val_top1"]) == {"0.001", "0.01"} and 0 <= result["test_top1"] <= 1
    assert os.path.isdir(f"{run}.lr_cv_esc50/test_lr_{result['best_lr']:g}/esc50")


def test_a_finetuning_resumes_only_with_its_epoch_size(tmp_path):
    """Rerunning a finetuning with another --paper-epoch-clips would resume it with a schedule and
    data position counted in other epochs: refused, naming the flag and the folder."""
    from raysup.config import ConfigError
    from raysup.protocols import keep_epoch_size

    run = str(tmp_path / "paper_protocol" / "video")
    keep_epoch_size(run, 106_000)
    keep_epoch_size(run, 106_000)  # the same: resumes
    with pytest.raises(ConfigError, match=r"--paper-epoch-clips: .*video was finetuned with 106000 clips per epoch, now 40000"):
        keep_epoch_size(run, 40_000)
