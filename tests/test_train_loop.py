"""The training loop's pure parts: per-step learning-rate schedules, weight-decay groups,
the resume check, the non-finite guard and checkpoint loading (no Ray needed)."""
from __future__ import annotations

import math

import pytest
import torch

from raysup.checkpoint import CHECKPOINT_FILE
from raysup.config import ConfigError, OptimConfig, to_dict
from raysup.methods import make_config, method_module
from raysup.train import NonFiniteLoss, check_finite, config_changes, load_weights, lr_factor, make_optimizer, make_scheduler


def test_warmup_and_cosine_are_per_step():
    cfg = OptimConfig(lr=1.0, schedule="cosine", warmup_epochs=1)
    steps, epochs = 10, 5  # 50 steps, the first 10 warm up
    f = [lr_factor(cfg, s, steps, epochs) for s in range(steps * epochs)]
    assert f[0] == pytest.approx(1 / 11) and f[9] == pytest.approx(10 / 11)  # linear within the first epoch
    assert all(a < b for a, b in zip(f[:10], f[1:11]))
    assert f[10] == pytest.approx(1.0)  # cosine starts at the peak
    assert f[30] == pytest.approx(0.5 * (1 + math.cos(math.pi * 20 / 40)))
    assert all(a > b for a, b in zip(f[10:-1], f[11:]))  # decays at every step, not once per epoch
    assert f[-1] < 0.01


def test_step_schedule_milestones_are_fractions_of_the_run():
    cfg = OptimConfig(schedule="step", milestones=(0.5, 0.75), gamma=0.1)
    f = [lr_factor(cfg, s, 4, 10) for s in range(40)]  # 40 steps
    assert f[19] == 1.0 and f[20] == pytest.approx(0.1) and f[29] == pytest.approx(0.1) and f[30] == pytest.approx(0.01)


def test_scheduler_steps_the_optimizer_lr():
    model = torch.nn.Linear(2, 2)
    opt = make_optimizer(OptimConfig(lr=0.1, schedule="constant", warmup_epochs=0.5), model)
    sched = make_scheduler(OptimConfig(lr=0.1, schedule="constant", warmup_epochs=0.5), opt, steps_per_epoch=4, epochs=2)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.1 / 3, 0.2 / 3, 0.1, 0.1])


def test_no_weight_decay_on_norm_and_bias_unless_asked():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    groups = make_optimizer(OptimConfig(name="sgd", weight_decay=1e-4), model).param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight), id(model[2].weight)}
    groups = make_optimizer(OptimConfig(name="sgd", weight_decay=1e-4, decay_norm_and_bias=True), model).param_groups
    assert len(groups) == 1 and groups[0]["weight_decay"] == 1e-4


def test_gradient_clipping_is_a_setting():
    from raysup.config import from_dict

    assert from_dict(OptimConfig, {"clip_grad_norm": "1.5"}).clip_grad_norm == 1.5
    with pytest.raises(ConfigError, match="clip_grad_norm: must be >= 0"):
        from_dict(OptimConfig, {"clip_grad_norm": "-1"})


def test_config_changes_name_nested_fields():
    a = to_dict(make_config("supervised", "tiny"))
    b = to_dict(make_config("supervised", "tiny", {"optim.lr": "0.5", "epochs": "30", "optim.milestones": "0.5"}))
    assert set(config_changes(a, b)) == {"optim.lr", "epochs", "optim.milestones"}
    assert config_changes(a, to_dict(make_config("supervised", "tiny"))) == {}


def test_non_finite_output_names_the_metric_epoch_and_step():
    check_finite({"loss": torch.tensor(1.0), "acc": torch.tensor(0.5)}, 0, 0)
    with pytest.raises(NonFiniteLoss, match="loss_audio is not finite at epoch 3, step 17"):
        check_finite({"loss": torch.tensor(1.0), "loss_audio": torch.tensor(float("nan"))}, 3, 17)
    with pytest.raises(NonFiniteLoss, match="loss is not finite"):
        check_finite({"loss": torch.tensor(float("inf"))}, 0, 0)


def test_checkpoint_of_another_architecture_is_a_config_error(tmp_path):
    from raysup.data.schema import TensorSpec

    specs = {"frames": TensorSpec((8, 32, 32, 3), "uint8"), "audio": TensorSpec((40, 99), "float16")}
    tiny = method_module("xdc").build(make_config("xdc", "tiny"), specs)
    torch.save({"model": tiny.state_dict()}, tmp_path / CHECKPOINT_FILE)
    other = method_module("xdc").build(make_config("xdc", "tiny", {"method.k": "8"}), specs)  # heads of another size
    load_weights(other, str(tmp_path), pretrained=True)  # the next XDC round: encoders only, fresh heads
    with pytest.raises(ConfigError, match="checkpoint: .* does not fit this model"):
        load_weights(other, str(tmp_path))
