"""Every benchmark script runs once in ``--quick`` mode on the session's Ray instance, so the
scripts never rot. Speed is measured by the scripts, never asserted here."""
from __future__ import annotations

import math
import os
import runpy

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "experiments", "bench")


def _numbers(rows: list[dict]) -> list[float]:
    return [v for r in rows for v in r.values() if isinstance(v, float)]


@pytest.mark.parametrize("script", ["prepare", "ingest", "train_step", "clustering", "cluster_scale"])
def test_bench_quick(script, ray_session, capsys):
    rows = runpy.run_path(os.path.join(BENCH, f"{script}.py"))["main"](["--quick"])
    out = capsys.readouterr().out
    assert rows and "load average" in out and "machine:" in out
    assert any(k.startswith("goal") for k in rows[-1]), rows[-1]  # every stage states its goal
    numbers = _numbers(rows)
    assert any(x > 0 for x in numbers) and not any(math.isinf(x) for x in numbers), rows
