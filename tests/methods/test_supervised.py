"""The spine end to end: supervised training on the synthetic set beats random init on a probe."""
from __future__ import annotations

from raysup.checkpoint import latest_checkpoint, load_checkpoint_file
from raysup.evaluate import probe
from raysup.methods import load_config, make_config, method_module


def test_supervised_probe_beats_random_init(prepared, tmp_path):
    data, labels = prepared
    cfg = make_config("supervised", "tiny", {"epochs": 8})
    method_module("supervised").run(cfg, data, str(tmp_path / "run"), labels=labels)
    ckpt = latest_checkpoint(str(tmp_path / "run"))
    cfg = load_config(load_checkpoint_file(ckpt)["config"])
    trained = probe(cfg, data, labels, ckpt)
    random = probe(cfg, data, labels, None)
    print(f"supervised probe {trained} vs random init {random}")
    assert trained["video"] > random["video"] + 0.25, (trained, random)
    assert trained["video"] > 0.6 and trained["audio"] > 0.8
