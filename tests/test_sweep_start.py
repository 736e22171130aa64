"""What a sweep refuses before any work (no Ray needed), and what its cached supervised baseline
is keyed on."""
from __future__ import annotations

import json

import pytest

from raysup.data.storage import resolve, write_json
from raysup.sweep import Sweep, check_start, supervised_dir


def _sweep(storage, **kw) -> Sweep:
    fields = {"method": "xdc", "grid": {"method.k": [4, 8]}, "data": "s3://KEY:SECRET@b/prepared?endpoint_override=h:1",
              "labels": "labels.csv", "storage": str(storage), "name": "s", **kw}
    return Sweep(**fields)


def _started(s: Sweep) -> None:
    """The folder as a started sweep leaves it (run_sweep records its arguments first)."""
    fs, root = resolve(s.storage)
    fs.create_dir(f"{root}/{s.name}")
    write_json(fs, f"{root}/{s.name}/sweep.json", s.record())


def test_the_record_has_no_credentials(tmp_path):
    record = _sweep(tmp_path).record()
    assert record["data"] == "s3://b/prepared?endpoint_override=h:1" and "storage" not in record
    assert "SECRET" not in json.dumps(record)
    assert not {"protocol", "eval_data", "pretrain_labels", "published"} & set(record)  # a sweep recorded before --paper's evaluation resumes as is
    paper = _sweep(tmp_path, protocol="paper", eval_data="s3://KEY:SECRET@b/ucf101", pretrain_labels="k400.csv", published={("xdc",): {"paper UCF101": 74.2}})
    record = paper.record()
    assert (record["protocol"], record["eval_data"], record["pretrain_labels"]) == ("paper", "s3://b/ucf101", "k400.csv")
    assert "SECRET" not in json.dumps(record) and "published" not in record


def test_an_existing_sweep_is_neither_restarted_nor_overwritten_by_accident(tmp_path):
    s = _sweep(tmp_path)
    check_start(s)  # nothing there yet
    _started(s)
    with pytest.raises(FileExistsError, match=r"already holds a sweep; pass --resume to continue it, --overwrite"):
        check_start(s)
    (tmp_path / "s" / "results.csv").write_text("k,video\n")
    with pytest.raises(FileExistsError, match="already holds a finished sweep"):
        check_start(s)
    check_start(s, resume=True)
    check_start(s, overwrite=True)
    with pytest.raises(ValueError, match="pass one of them"):
        check_start(s, resume=True, overwrite=True)


def test_resume_with_other_arguments_is_refused_naming_them(tmp_path):
    _started(_sweep(tmp_path))
    check_start(_sweep(tmp_path, data="s3://OTHER:KEYS@b/prepared?endpoint_override=h:1"), resume=True)  # same data, other keys
    with pytest.raises(ValueError) as e:
        check_start(_sweep(tmp_path, data="s3://KEY:SECRET@b/other", preset="paper"), resume=True)
    msg = str(e.value)
    assert "data: 's3://b/prepared?endpoint_override=h:1' -> 's3://b/other'" in msg and "preset: 'tiny' -> 'paper'" in msg
    assert "grid" not in msg and "SECRET" not in msg
    with pytest.raises(ValueError, match=r"supervised: False -> True"):
        check_start(_sweep(tmp_path, supervised=True), resume=True)


def test_the_supervised_baseline_is_keyed_by_data_labels_and_preset(small_prepared, prepared, tmp_path):
    small, small_labels = small_prepared
    big, big_labels = prepared
    key = supervised_dir(_sweep(tmp_path, data=small, labels=small_labels))
    assert key.startswith(f"{tmp_path}/s/baselines/supervised-")
    assert supervised_dir(_sweep(tmp_path, data=small, labels=small_labels, name="other_sweep", grid={"method.k": [2]})).endswith(key.rsplit("/", 1)[1])
    others = {
        supervised_dir(_sweep(tmp_path, data=big.uri, labels=small_labels)),
        supervised_dir(_sweep(tmp_path, data=small, labels=big_labels)),
        supervised_dir(_sweep(tmp_path, data=small, labels=small_labels, preset="paper")),
        supervised_dir(_sweep(tmp_path, data=small, labels=small_labels, preset="paper", pretrain_labels=big_labels)),  # Superv: the labels it trains on
    }
    assert len(others) == 4 and key not in others


def test_overwrite_deletes_only_what_the_sweep_wrote(tmp_path):
    """A finished sweep's folder as Tune and raysup leave it, plus a user's own files beside
    them (some named like a sweep's): --overwrite deletes the sweep's, keeps the baselines and
    everything of the user's."""
    from raysup.sweep import clear

    s = _sweep(tmp_path)
    _started(s)
    trial = "trial_de69c_00000_0_method.k=4_2026-12-06_11-12-06"
    written = ["sweep.json", "results.csv", "results.md", "results.png", "timing.json", "timing.json.tmp", "tuner.pkl",
               ".validate_storage_marker", "experiment_state-2026-12-06_11-12-06.json", "basic-variant-state-2026-12-06_11-12-06.json",
               f"{trial}/result.json", f"{trial}/error.txt", "runs/de69c_00000/round_0/checkpoint_000000/checkpoint.pt",
               "pbt_global.txt", "pbt_policy_de69c_00000.txt"]  # PBT's logs of its exploits
    kept = ["baselines/supervised-0123/checkpoint.pt", "analysis.ipynb", "paper_figs/fig1.pdf", "results_v2.csv", "notes/sweep.json",
            "trial_notes/plan.md", "runs.txt", "trial_de69c_00000.md", "experiment_state-old.json.bak",
            "pbt_notes.md"]
    for f in written + kept:
        (tmp_path / "s" / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "s" / f).write_text("x")
    fs, root = resolve(s.storage)
    clear(fs, f"{root}/s")
    left = sorted(str(p.relative_to(tmp_path / "s")) for p in (tmp_path / "s").rglob("*") if p.is_file())
    assert left == sorted(kept)
    check_start(s)  # no sweep left to refuse
