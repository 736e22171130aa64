"""A sweep driver for tests that need the sweep in its own process (to kill it, or to run it
on another Ray cluster):

    python tests/sweep_driver.py SWEEP_JSON [--address ADDR] [--resume] [--autoscaler-config P]

SWEEP_JSON holds the fields of :class:`raysup.sweep.Sweep`. Without ``--address`` it connects to
``RAY_ADDRESS`` (set for a Ray job's entrypoint). Prints ``sweep finished: N trials``.
"""
from __future__ import annotations

import argparse
import json

from raysup.runtime import init_ray
from raysup.sweep import Sweep, run_sweep

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("sweep", help="JSON of the Sweep fields")
    p.add_argument("--address")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--autoscaler-config")
    a = p.parse_args()
    init_ray(a.address)
    grid = run_sweep(Sweep(**json.loads(a.sweep)), resume=a.resume, autoscaler_config=a.autoscaler_config)
    print(f"sweep finished: {len(grid)} trials", flush=True)
