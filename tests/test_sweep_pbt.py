"""`raysup sweep --scheduler pbt`: what PBT may perturb and its refusals (no Ray), a restarted
segment's optimiser taking the perturbed settings, and one real PBT sweep (slow)."""
from __future__ import annotations

import json

import pytest
import torch

from raysup.config import ConfigError, OptimConfig, TrainConfig, to_dict
from raysup.methods import make_config
from raysup.sweep import space
from raysup.train import config_changes, make_optimizer, make_scheduler, record_config, set_optim


@pytest.mark.parametrize("args,match", [
    (["--grid", "method.dim=16,32"], "--scheduler pbt: method.dim cannot change mid-run (it changes the model's shape"),
    (["--sample", "optim.lr=loguniform:1e-4:1e-2", "--grid", "crop_size=16,24"], "--scheduler pbt: crop_size cannot change mid-run"),
    (["--sample", "optim.lr=loguniform:1e-4:1e-2", "--search", "grid"], "--sample: grid search only takes --grid"),
    (["--grid", "optim.lr=0.1,0.01", "--perturbation-interval", "0"], "--perturbation-interval: must be >= 1 epoch"),
])
def test_pbt_refuses_keys_that_change_the_model_or_data(args, match, tmp_path, capsys):
    from raysup.cli import main

    argv = ["sweep", "toy", "--data", str(tmp_path), "--labels", "l.csv", "--out", str(tmp_path / "s"), "--scheduler", "pbt", "--metric", "loss", *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("raysup sweep: error: ") and match in err, err


def test_pbt_refuses_a_multi_stage_method_and_a_model_search():
    with pytest.raises(ConfigError, match="--scheduler pbt: xdc trains in stages"):
        space.check_pbt_method("xdc")
    space.check_pbt_method("gdt")
    with pytest.raises(ConfigError, match="--scheduler pbt: takes --search grid or random"):
        space.check_pbt("optuna", ["optim.lr"])
    space.check_pbt("random", ["optim.lr", "optim.weight_decay", "method.tau"])
    pbt = space.scheduler("pbt", "loss", "min", 4, space.mutations({"optim.weight_decay": [0.0, 1e-4]}, {"optim.lr": ["loguniform", 1e-4, 1e-2]}))
    assert pbt._hyperparam_mutations["optim.weight_decay"] == [0.0, 1e-4] and pbt._synch


def test_a_pbt_restart_may_change_only_the_perturbed_keys(tmp_path):
    """config.json of a trial's run: the perturbed keys may change on a PBT restart (recorded in
    resumes.jsonl); any other change is still refused, naming it."""
    import pyarrow.fs as pafs

    def cfg(**overrides) -> TrainConfig:
        return make_config("gdt", "tiny", {"batch_size": 4, **overrides})

    fs, root = pafs.LocalFileSystem(), str(tmp_path)
    record_config(fs, root, cfg(**{"optim.lr": 1e-3}), trained=False)
    with pytest.raises(ConfigError, match=r"optim.lr: 0.001 -> 0.002"):
        record_config(fs, root, cfg(**{"optim.lr": 2e-3}), trained=True)
    record_config(fs, root, cfg(**{"optim.lr": 2e-3}), trained=True, may_change=("optim.lr",))
    assert json.loads((tmp_path / "resumes.jsonl").read_text())["changed"] == {"optim.lr": [1e-3, 2e-3]}
    with pytest.raises(ConfigError, match=r"batch_size: 4 -> 8"):
        record_config(fs, root, cfg(**{"optim.lr": 4e-3, "batch_size": 8}), trained=True, may_change=("optim.lr",))
    assert not config_changes(json.loads((tmp_path / "config.json").read_text()), to_dict(cfg(**{"optim.lr": 2e-3})))  # the refused one not recorded


def test_a_restored_optimiser_takes_the_perturbed_lr_and_weight_decay():
    """A donor's optimiser and scheduler state (step 5 of a cosine schedule) loaded into a
    trial with a perturbed config: the moments and step stay the donor's, lr and weight decay
    become the new config's at that step (without set_optim the donor's lr came back)."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    old, new = OptimConfig(name="sgd", lr=0.1, weight_decay=1e-4), OptimConfig(name="sgd", lr=0.05, weight_decay=1e-3, momentum=0.5)
    opt = make_optimizer(old, model)
    sched = make_scheduler(old, opt, steps_per_epoch=2, epochs=5)
    for _ in range(5):
        model(torch.randn(8, 4)).sum().backward()
        opt.step()
        sched.step()
    donor = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    opt2 = make_optimizer(new, model)
    sched2 = make_scheduler(new, opt2, steps_per_epoch=2, epochs=5)
    opt2.load_state_dict(donor["optimizer"])
    sched2.load_state_dict(donor["scheduler"])
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])  # the donor's lr came back
    set_optim(new, opt2, sched2, 1)
    factor = opt.param_groups[0]["lr"] / 0.1  # the cosine factor at step 5
    assert sched2.last_epoch == 5 and 0 < factor < 1 and [g["lr"] for g in opt2.param_groups] == pytest.approx([0.05 * factor] * 2)
    assert [g["weight_decay"] for g in opt2.param_groups] == [1e-3, 0.0] and opt2.param_groups[0]["momentum"] == 0.5
    assert torch.equal(opt2.state[next(iter(model.parameters()))]["momentum_buffer"], opt.state[next(iter(model.parameters()))]["momentum_buffer"])
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.05 * sched2.lr_lambdas[0](6))  # the schedule goes on from the new lr


@pytest.mark.slow  # ~12 min on a loaded 2-core machine: a PBT sweep (2 trials, 2 segments each, an exploit)
def test_pbt_continues_a_trial_from_a_better_ones_checkpoint_with_a_perturbed_lr(ray_session, small_prepared, tmp_path, capsys):
    """`raysup sweep toy` with PBT on the training loss over a sampled lr: 2 trials, 2 epochs,
    compared after the first. The worse trial continues from the better one's checkpoint
    (synchronous PBT with 2 trials: one exploit per comparison) with a
    perturbed lr: its pbt.jsonl says from which trial and epoch, its next segment trains from
    that epoch with the new lr (the restored optimiser took it), and the table and CSV have both
    trials, probed, with their final lr."""
    import pandas as pd

    from raysup.cli import main

    data, labels = small_prepared
    out = tmp_path / "pbt"
    argv = ["sweep", "toy", "--data", data, "--labels", labels, "--out", str(out), "--sample", "optim.lr=loguniform:1e-5:1e-2", "--samples", "2",
            "--scheduler", "pbt", "--metric", "loss", "--max-concurrent", "2", "--no-supervised", "--set", "epochs=2", "--set", "batch_size=8",
            "--set", "optim.schedule=constant"]
    assert main(argv) == 0, capsys.readouterr().err
    cap = capsys.readouterr()
    print(cap.out, cap.err)
    runs = {d.name: [json.loads(line) for line in (d / "pbt.jsonl").read_text().splitlines()] for d in (out / "runs").iterdir()}
    assert len(runs) == 2, runs
    exploits = [seg for segs in runs.values() for seg in segs if seg["from_trial"] != seg["trial"]]
    assert exploits, runs
    for seg in exploits:
        donor = next(d for d in runs[seg["from_trial"]] if d["epochs"] == seg["from_epoch"])  # the donor's segment that ended there
        assert seg["config"]["optim.lr"] != donor["config"]["optim.lr"]  # perturbed
        assert seg["metrics"]["lr"] == pytest.approx(seg["config"]["optim.lr"])  # the restored optimiser took it
        assert seg["epochs"] == seg["from_epoch"] + 1 and seg["metrics"]["epoch"] == seg["from_epoch"]  # continued from the donor's epoch
    for segs in runs.values():
        assert segs[-1]["epochs"] == 2 and [s["segment"] for s in segs] == list(range(len(segs)))
    assert all(not (out / "runs" / t / "tensorboard").exists() for t in runs)
    assert len(list((out / "tensorboard").iterdir())) == 2
    df = pd.read_csv(out / "results.csv")
    trials = df[df["optim.lr"].astype(str) != "random init"]
    assert len(trials) == 2 and trials["video"].notna().all(), df
    final = {segs[-1]["config"]["optim.lr"] for segs in runs.values()}
    assert sorted(trials["optim.lr"].astype(float)) == pytest.approx(sorted(final))
    print(f"{len(exploits)} exploits: " + "; ".join(f"{s['trial']} from {s['from_trial']} at epoch {s['from_epoch']}, lr {s['config']['optim.lr']:.3g}"
                                               for s in exploits))
