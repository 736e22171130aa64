"""``raysup export``: every method's encoders as plain state_dicts that load with strict=True into
the architecture the card names (torchvision's R(2+1)D-18 and ResNet-18 for the paper encoders)
and give the same features; the card's input description feeds them as raysup does."""
from __future__ import annotations

import json
import os

import pytest
import torch
import torchvision

from raysup.cli import main
from raysup.config import to_dict
from raysup.data.ingest import PreparedData
from raysup.data.transforms import audio_input, video_input
from raysup.methods import make_config, method_module, method_names
from raysup.train import data_identity, record_data

# each method's tiny preset, plus Cross and Learn's frame-difference stream (the "diff" encoder)
TINY = [(m, {}) for m in method_names()] + [("cross_and_learn", {"method.modality": "diff"})]


def write_run(run: str, cfg, data: str):
    """A run folder as `raysup train` leaves it (data.json, then one checkpoint), holding ``cfg``'s
    model with random weights and random BatchNorm statistics (so the export must carry both)."""
    record_data(run, data_identity(PreparedData(data), None), resume=False)
    model = method_module(cfg.method_name).build(cfg, PreparedData(data).cropped(cfg.crop_size).specs)
    torch.manual_seed(0)
    for name, b in model.named_buffers():
        if b.is_floating_point() and "running_var" in name:
            b.uniform_(0.5, 2.0)
        elif b.is_floating_point() and "running_mean" in name:
            b.normal_(0, 0.1)
    ckpt = os.path.join(run, "train", "checkpoint_000000")
    os.makedirs(ckpt)
    torch.save({"model": model.state_dict(), "config": to_dict(cfg), "epoch": 2, "state": {"epoch": 2, "step": 30}},
               os.path.join(ckpt, "checkpoint.pt"))
    return model.eval()


def load_by_card(out: str, monkeypatch) -> tuple[torch.nn.Module, dict]:
    """Run the card's own loading code beside the files (it loads with strict=True)."""
    card = json.load(open(f"{out}.json"))
    monkeypatch.chdir(os.path.dirname(out))
    scope: dict = {}
    exec(card["architecture"]["code"], scope)
    return scope["net"], card


def export(run: str, encoder: str, out: str) -> None:
    assert main(["export", run, "--encoder", encoder, "--out", out]) == 0


def test_every_methods_encoders_load_strictly_and_give_the_same_features(small_prepared, tmp_path, monkeypatch):
    data, _ = small_prepared
    for method, overrides in TINY:
        cfg = make_config(method, "tiny", overrides)
        run = str(tmp_path / f"{method}{len(overrides)}")
        model = write_run(run, cfg, data)
        for name, (raysup_net, dim) in model.encoders().items():
            out = str(tmp_path / f"{method}{len(overrides)}-{name}.pt")
            export(run, name, out)
            net, card = load_by_card(out, monkeypatch)
            assert card["method"] == method and card["preset"] == "tiny" and card["feature_dim"] == dim
            assert card["config"] == json.loads(json.dumps(to_dict(cfg))) and card["trained"]["epochs"] == 3 and card["trained"]["steps"] == 30
            assert card["data"]["clips"] == PreparedData(data).manifest["counts"]["clips"] and len(card["data"]["manifest_sha256"]) == 64
            loaded = net.state_dict()  # the card's code loaded the file strictly; raysup's classes keep raysup's keys
            assert all(torch.equal(loaded[k], v) for k, v in raysup_net.state_dict().items())
            if card["input"]["shape"] is None:  # a plugin's own network: built through the method
                continue
            x = torch.randn(1, *card["input"]["shape"][1:])
            features = card["architecture"]["features"].split("#")[0]
            with torch.no_grad():
                got, want = eval(features, {"net": net.eval(), "x": x}), eval(features, {"net": raysup_net, "x": x})
            assert got.shape == (1, dim) and torch.allclose(got, want, atol=1e-5), (method, name)


def test_paper_r2plus1d_18_and_audio_resnet18_load_into_torchvision(small_prepared, tmp_path, monkeypatch):
    data, _ = small_prepared
    cfg = make_config("xdc", "paper", {"crop_size": "0"})  # paper encoders; the small set's 32 px frames
    run = str(tmp_path / "xdc")
    model = write_run(run, cfg, data)
    out = {name: str(tmp_path / f"{name}.pt") for name in ("video", "audio")}
    for name, path in out.items():
        export(run, name, path)
    # what the card tells a user to do, by hand: torchvision's network, fc replaced by an identity
    r2plus1d = torchvision.models.video.r2plus1d_18()
    r2plus1d.fc = torch.nn.Identity()
    r2plus1d.load_state_dict(torch.load(out["video"], weights_only=True), strict=True)
    card = json.load(open(f"{out['video']}.json"))
    assert card["architecture"]["name"] == "r2plus1d_18" and card["feature_dim"] == 512
    assert "torchvision.models.video.r2plus1d_18()\nnet.fc = torch.nn.Identity()" in card["architecture"]["code"]
    audio_net, audio_card = load_by_card(out["audio"], monkeypatch)
    assert type(audio_net) is torchvision.models.ResNet and audio_card["feature_dim"] == 512
    # the same features as raysup's encoders, fed as the cards say (xdc paper: Kinetics' mean and std)
    spec = card["input"]
    assert spec["norm"] == "kinetics" and spec["shape"] == ["B", 3, 8, 32, 32] and audio_card["input"]["shape"][:2] == ["B", 1]
    torch.manual_seed(1)
    frames = torch.randint(0, 256, (1, 4, 32, 32, 3), dtype=torch.uint8)  # a short clip: one forward of 31M params on CPU
    mel = torch.randn(1, *audio_card["input"]["shape"][2:])
    with torch.no_grad():
        want = model.embed({"frames": frames, "audio": mel})
        got_video = r2plus1d.eval()(video_input(frames, train=False, norm=spec["norm"]))
        got_audio = audio_net.eval()(audio_input(mel))
    assert got_video.shape == (1, 512) and torch.allclose(got_video, want["video"], atol=1e-5)
    assert torch.allclose(got_audio, want["audio"], atol=1e-5)


def test_export_refusals_are_one_line_exit_2(small_prepared, tmp_path, capsys):
    data, _ = small_prepared
    run, out = str(tmp_path / "gdt"), str(tmp_path / "v.pt")
    write_run(run, make_config("gdt", "tiny"), data)
    refused = [
        ([run, "--encoder", "flow", "--out", out], "gdt has no 'flow' encoder (it has: video, audio)"),
        ([str(tmp_path / "nothing"), "--encoder", "video", "--out", out], "no complete checkpoint"),
        ([run, "--encoder", "video", "--out", str(tmp_path / "v.safetensors")], "write a .pt file"),
        ([run, "--encoder", "video", "--out", "s3://bucket/v.pt"], "--out: a local file"),
    ]
    for args, message in refused:
        assert main(["export", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not os.path.exists(out)
    export(run, "video", out)
    before = os.path.getmtime(out)
    assert main(["export", run, "--encoder", "audio", "--out", out]) == 2  # no overwrite
    assert "exists; choose another file or pass --overwrite" in capsys.readouterr().err
    assert os.path.getmtime(out) == before and json.load(open(f"{out}.json"))["encoder"] == "video"
    assert main(["export", run, "--encoder", "audio", "--out", out, "--overwrite"]) == 0
    assert json.load(open(f"{out}.json"))["encoder"] == "audio"
    # a run that records no data (no data.json) needs --data to build its model
    os.remove(os.path.join(run, "data.json"))
    assert main(["export", run, "--encoder", "video", "--out", out, "--overwrite"]) == 2
    assert "--data: " in capsys.readouterr().err
    assert main(["export", run, "--encoder", "video", "--out", out, "--overwrite", "--data", data]) == 0
    card = json.load(open(f"{out}.json"))
    assert card["data"] is None and card["input_from"]["data"] == data


@pytest.mark.slow
def test_export_of_a_trained_two_round_xdc_run_records_its_training(small_prepared, tmp_path, monkeypatch):
    data, _ = small_prepared
    run, out = str(tmp_path / "xdc"), str(tmp_path / "video.pt")
    sets = ["epochs=1", "max_steps=1", "batch_size=8", "method.rounds=2", "method.k=4"]
    assert main(["train", "xdc", "--data", data, "--out", run, *[a for s in sets for a in ("--set", s)]]) == 0
    export(run, "video", out)
    net, card = load_by_card(out, monkeypatch)
    trained = card["trained"]
    assert trained["stage"] == "round_1" and trained["finished_stages"] == {"round_0": 1, "round_1": 1}
    assert trained["epochs"] == 1 and trained["steps"] == 1 and "loss" in trained["last_metrics"]
    assert card["data"]["clips"] == 48 and card["config"]["method"]["rounds"] == 2
    assert net(torch.randn(1, *card["input"]["shape"][1:])).shape == (1, card["feature_dim"])
