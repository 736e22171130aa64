"""XDC's deep-clustering rounds one by one (papers/xdc.md L115: "5 to 6 deep clustering
iterations" to converge): trains ROUNDS rounds on the embedded synthetic set (or --data) and
prints, per round, the linear-probe top-1 of each encoder and the NMI of the clusters each encoder
learned from with the hidden classes. docs/results.md ("Rounds") has its numbers.

    python experiments/xdc_rounds.py                 # tiny preset, 3 rounds
    python experiments/xdc_rounds.py --paper-shape   # Table 10's schedule shape scaled down (below)
"""
from __future__ import annotations

import argparse
import json
import os

# Table 10 (papers/xdc.md L393): we/se/te 10/10/30, e-stop, SGD lr 0.01 at batch 32, wd 1e-4,
# γ 0.01, scaled down to 2/2/6 epochs of 3× the training clips, early stopping after 3 epochs
# without a new best validation loss (Table 9, L386)
PAPER_SHAPE = {"epochs": 6, "patience": 3, "optim.name": "sgd", "optim.lr": 0.01, "optim.lr_batch": 32, "optim.momentum": 0.9,
               "optim.weight_decay": 1e-4, "optim.warmup_epochs": 2, "optim.schedule": "step", "optim.milestones": [4 / 6],
               "optim.gamma": 0.01, "method.epoch_size": 3.0}


def main(argv: list[str] | None = None) -> dict:
    from raysup import runner
    from raysup.checkpoint import latest_checkpoint
    from raysup.data.storage import read_json, resolve
    from raysup.evaluate import probe
    from raysup.methods import make_config
    from raysup.runtime import init_ray
    from raysup.sweep import default_dataset, make_default_dataset

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/xdc_rounds", help="the run folder (new)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--paper-shape", action="store_true", help="Table 10's schedule shape, scaled down")
    p.add_argument("--data", help="prepared folder (default: the embedded synthetic set under results/synthetic)")
    p.add_argument("--labels", help="labels CSV (required with --data)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    a = p.parse_args(argv)
    init_ray(None)
    if a.data:
        data, labels = a.data, a.labels
    else:
        make_default_dataset(os.path.abspath("results/synthetic"))
        data, labels = default_dataset(os.path.abspath("results/synthetic"))
    overrides = {**(PAPER_SHAPE if a.paper_shape else {}), "method.rounds": a.rounds, **dict(s.split("=", 1) for s in a.set)}
    cfg = make_config("xdc", "tiny", overrides)
    prepared = runner.open_data(data, cfg)
    runner.train(cfg, prepared, a.out, labels=labels)
    fs, root = resolve(a.out)
    out = {"random init": probe(cfg, prepared, labels, None)}
    for r in range(a.rounds):
        stats = read_json(fs, f"{root}/clusters/round_{r}_stats.json")  # per encoder: the clusters it learned from
        out[f"round {r + 1}"] = {"probe": probe(cfg, prepared, labels, latest_checkpoint(f"{a.out}/round_{r}")),
                                 "nmi_truth": {e: s.get("nmi_truth") for e, s in stats.items()}}
        print(json.dumps({f"round {r + 1}": out[f"round {r + 1}"]}), flush=True)
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
