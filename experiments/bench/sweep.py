"""Stage 5, the whole sweep: where the wall time of ``python experiments/xdc_k_sweep.py`` goes.

    python experiments/bench/sweep.py                          # runs the default sweep in a fresh storage, then breaks it down (~10 min)
    python experiments/bench/sweep.py --results results/xdc_k_sweep   # breaks down a finished sweep
    python experiments/bench/sweep.py --quick                  # the sweep's --quick grid

Every number comes from what the sweep itself records: ``timing.json`` of ``raysup.sweep.main``
(data, sweep, baselines, table), each trial's final Tune report (``time_run_s``: the method's
``run``, ``time_probe_s``: the objective) and its run's ``metrics.jsonl`` (per epoch:
``time_epoch_s`` and ``time_data_wait_s`` of the train loop; per XDC round: ``time_features_s``,
``time_kmeans_s``). What is left of a trial's ``run`` once its epochs, features and k-means are
taken away is Ray Train's start and stop (controller, worker process, dataset coordinator,
checkpoint upload); what is left of Tune's trial time once ``run`` and the probe are taken away
is the trial process's own start (imports, config).
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from raysup.data.storage import read_json, resolve  # noqa: E402

SWEEP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "xdc_k_sweep.py")


def _jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def trial_rows(sweep_dir: str) -> list[dict]:
    """One row per finished trial: seconds per stage (see the module docstring)."""
    rows = []
    for result in sorted(glob.glob(os.path.join(sweep_dir, "trial_*", "result.json"))):
        final = _jsonl(result)[-1]
        epochs = _jsonl(os.path.join(sweep_dir, "runs", final["trial_id"], "metrics.jsonl"))
        rounds = {int(e.get("round", 0)): e for e in epochs}  # the round's features / k-means times ride on its reports
        features = sum(e.get("time_features_s", 0.0) for e in rounds.values())
        kmeans = sum(e.get("time_kmeans_s", 0.0) for e in rounds.values())
        steps = sum(e["time_epoch_s"] - e["time_data_wait_s"] for e in epochs)
        wait = sum(e["time_data_wait_s"] for e in epochs)
        run, probe = final["time_run_s"], final["time_probe_s"]
        point = ", ".join(f"{k[6:]}={v}" for k, v in final.items() if k.startswith("param_"))
        rows.append({
            "trial": point, "epochs": len(epochs), "features s": features, "k-means s": kmeans,
            "train steps s": steps, "data wait s": wait, "Train start/stop s": run - features - kmeans - steps - wait,
            "probe s": probe, "trial start s": final["time_total_s"] - run - probe, "trial total s": final["time_total_s"],
        })
    return rows


def breakdown(sweep_dir: str) -> list[dict]:
    """Print the per-trial table and the sweep's wall time by stage; returns the trial rows
    plus a last row of shares (with the stated goal: make the next bottleneck visible)."""
    timing = read_json(*resolve(os.path.join(sweep_dir, "timing.json")))  # as raysup.sweep.main wrote it
    rows = trial_rows(sweep_dir)
    if not rows:
        raise FileNotFoundError(f"{sweep_dir}: no finished trial (trial_*/result.json)")
    print(f"Per trial ({len(rows)} trials, {timing['max_concurrent']} at a time; seconds of wall time inside each trial):")
    common.print_table(rows, floatfmt=".1f")
    totals = {k: sum(r[k] for r in rows) for k in rows[0] if k.endswith(" s")}  # seconds over all trials
    whole = totals.pop("trial total s")
    share = {"trial": "share of all trial time", **{k: f"{100 * v / whole:.0f}%" for k, v in totals.items()}}
    share["goal"] = f"next bottleneck: {max(totals, key=totals.get)}"
    print("Sweep wall time by stage (seconds):")
    common.print_table([{
        "data (synthesise + prepare)": timing["data_s"], "trials (Tune fit)": timing["sweep_s"],
        "baselines after the last trial": timing["baselines_wait_s"], "table + plot": timing["table_s"],
        "total": timing["total_s"], "baselines (in their task)": timing["baselines_s"],
    }], floatfmt=".1f")
    print("Shares of the trials' time:")
    common.print_table([share])
    return rows + [share]


def main(argv: list[str] | None = None) -> list[dict]:
    p = common.parser(__doc__, repeats=1)
    p.add_argument("--results", help="a finished sweep's folder (<storage>/xdc_k_sweep) to break down instead of running one")
    args = common.parse(p, argv)
    common.header("Stage 5: the default XDC k sweep, wall time by stage", args)
    if args.results:
        return breakdown(args.results)
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        cmd = [sys.executable, SWEEP, "--storage", tmp] + (["--quick"] if args.quick else []) + (["--address", args.address] if args.address else [])
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        print(f"`{' '.join(cmd[1:])}` took {time.perf_counter() - t:.1f} s end to end (process start and Ray start included)\n")
        return breakdown(os.path.join(tmp, "xdc_k_sweep"))


if __name__ == "__main__":
    main()
