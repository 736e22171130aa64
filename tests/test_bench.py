"""Every benchmark script runs once in ``--quick`` mode on the session's Ray instance (train_step
with ``-m slow``), so the scripts never rot. Speed is measured by the scripts, never asserted here."""
from __future__ import annotations

import math
import os
import runpy

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "experiments", "bench")


def _numbers(rows: list[dict]) -> list[float]:
    return [v for r in rows for v in r.values() if isinstance(v, float)]


# train_step (~23 s, a TorchTrainer fit beside a plain loop) and ingest (~15 s, a TorchTrainer fit too)
# are slow: fit itself runs in every
# method's tests, and the default run must stay under 12 minutes
@pytest.mark.parametrize("script", ["prepare", pytest.param("ingest", marks=pytest.mark.slow), pytest.param("train_step", marks=pytest.mark.slow),
                                    "clustering", "cluster_scale"])
def test_bench_quick(script, ray_session, capsys):
    rows = runpy.run_path(os.path.join(BENCH, f"{script}.py"))["main"](["--quick"])
    out = capsys.readouterr().out
    assert rows and "load average" in out and "machine:" in out
    assert any(k.startswith("goal") for k in rows[-1]), rows[-1]  # every stage states its goal
    numbers = _numbers(rows)
    assert any(x > 0 for x in numbers) and not any(math.isinf(x) for x in numbers), rows


@pytest.mark.slow  # ~7 min (prepare included): every stage in its own process with its own local Ray, at two sizes
def test_scale_curves_quick(capsys):
    curves = runpy.run_path(os.path.join(BENCH, "scale.py"))["main"](["--quick", "--json"])
    out = capsys.readouterr().out
    assert "machine:" in out and "load average" in out
    assert set(curves["stages"]) == {"prepare", "commit", "open", "cluster", "previous", "xdc_first_batch", "label_join", "video_average"}
    for c in curves["stages"].values():
        assert c["clips"] == [4000, 16000] and all(x > 0 for x in c["seconds_per_clip"] + c["peak_rss_mb"])
