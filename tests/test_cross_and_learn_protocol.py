"""Cross and Learn's finetuning of its optical-flow and frame-difference networks (Table 3,
papers/cross-and-learn.md L189): a fresh CaffeNet with the stack's input channels from the
motion network's conv and BN layers, fed the pretraining's stack.

Default run: the networks and their inputs on CPU tensors (no Ray). Slow (a Ray Train
pretraining and finetunings on the session's 180-video set): ``pytest -m slow
tests/test_cross_and_learn_protocol.py``."""
from __future__ import annotations

import json

import pytest
import torch

from raysup.checkpoint import latest_checkpoint, load_checkpoint_file
from raysup.cli import main
from raysup.config import ConfigError
from raysup.data.pairs import pair_input
from raysup.data.schema import TensorSpec
from raysup.methods import METHODS, make_config, method_module
from raysup.protocols import build_caffenet, model_protocols, paper_protocols

SPECS = {"frames": TensorSpec((8, 32, 32, 3), "uint8"), "flow": TensorSpec((7, 32, 32, 2), "float16"), "motion": TensorSpec((), "float32")}
PROTOCOLS = {p.key: p for p in METHODS["cross_and_learn"].PAPER_PROTOCOLS}


def clips(n: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"frames": torch.randint(0, 256, (n, 8, 32, 32, 3), dtype=torch.uint8, generator=g),
            "flow": torch.randn(n, 7, 32, 32, 2, generator=g).half(), "label": torch.arange(n) % 6}  # fmt: skip


@pytest.mark.parametrize("modality,channels", [("flow", 6 * 2), ("diff", 4 * 3)])  # the tiny preset's stacks: 6 flow fields, 4 differences
def test_motion_caffenet_starts_from_the_motion_networks_conv_and_bn_layers_and_reads_its_stack(modality, channels):
    cfg = make_config("cross_and_learn", "tiny", {"method.modality": modality})
    pretrained = method_module("cross_and_learn").build(cfg, SPECS)
    for p in pretrained.parameters():
        torch.nn.init.normal_(p)  # unlike any fresh init
    p = PROTOCOLS[modality]
    net = build_caffenet(cfg, SPECS, classes=6, init_prefix=p.init_prefix, stream=p.encoder)
    net.load_pretrained(pretrained.state_dict())
    src, dst = pretrained.motion_net.features.state_dict(), net.features.state_dict()
    assert src.keys() == dst.keys() and all(torch.equal(src[k], dst[k]) for k in src)  # conv and BN, running stats too
    assert net.features[0].in_channels == channels
    batch = clips()
    test = net.eval().inputs(batch, train=False)  # the pretraining's test-time stack: centre crop, flow fields less their mean
    _, stack = pair_input(batch["frames"], batch["flow"], modality, cfg.method.fields, size=32, train=False, channel_split=False)
    assert torch.equal(test, stack)
    # training: the stream's crop is already random; a random flip only (dx negated), no temporal flip
    flipped = test.flip(-1)
    if modality == "flow":
        flipped[:, 0::2] *= -1
    torch.manual_seed(0)
    x = net.train().inputs(batch, train=True)
    same = [torch.allclose(x[i], test[i], atol=1e-5) for i in range(len(x))]
    flip = [torch.allclose(x[i], flipped[i], atol=1e-5) for i in range(len(x))]
    assert all(a != b for a, b in zip(same, flip)) and any(same) and any(flip)
    assert test.shape == (8, channels, 32, 32)  # what conv1 takes (the rgb test runs the network end to end)


def test_motion_protocols_follow_the_rgb_scheme_and_table_3():
    rgb, flow, diff = PROTOCOLS["rgb"], PROTOCOLS["flow"], PROTOCOLS["diff"]
    for p in (flow, diff):  # L189: "the same scheme already used for RGB"
        assert (p.network, p.full, p.optim, p.epochs, p.batch_size, p.test_clips) == (rgb.network, rgb.full, rgb.optim, 200, 128, 5)
        assert p.init_prefix == "motion_net.features."
    assert dict(flow.published) == {"UCF101 split 1 (Table 3)": 79.2, "HMDB51 split 1 (Table 3)": 51.7}  # Table 3 L181, L183
    assert dict(diff.published) == {"UCF101 split 1 (Table 3)": 66.3, "HMDB51 split 1 (Table 3)": 33.3}
    # a run has one motion network: the other modality's protocol is left out, and refused if asked for
    for modality, other in (("flow", "diff"), ("diff", "flow")):
        cfg = make_config("cross_and_learn", "tiny", {"method.modality": modality})
        assert [p.key for p in model_protocols(paper_protocols("cross_and_learn"), cfg, SPECS)] == ["rgb", modality]
        with pytest.raises(ConfigError, match=f"method.modality={other}"):
            build_caffenet(cfg, SPECS, classes=6, init_prefix="motion_net.features.", stream=other)


@pytest.mark.slow
def test_cross_and_learn_paper_protocol_finetunes_the_frame_difference_network(prepared, tmp_path, capsys):
    data, labels = prepared[0].uri, prepared[1]
    run = str(tmp_path / "cal_diff")
    train = ["train", "cross_and_learn", "--data", data, "--out", run, "--set", "epochs=1", "--set", "batch_size=32", "--set", "method.modality=diff"]
    assert main(train) == 0
    capsys.readouterr()
    assert main(["probe", run, "--data", data, "--labels", labels, "--protocol", "paper", "--paper-epochs", "2", "--json"]) == 0
    acc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(acc) == {"rgb", "diff"} and all(0 <= v <= 1 for v in acc.values())
    saved = load_checkpoint_file(latest_checkpoint(f"{run}.paper_protocol/diff"))
    assert saved["model"]["features.0.weight"].shape[1] == 4 * 3  # 4 frame differences of RGB
    assert saved["config"]["batch_size"] == 128 and saved["config"]["optim"]["lr"] == 0.01
    print(f"cross_and_learn (diff) paper protocol: {acc}")
