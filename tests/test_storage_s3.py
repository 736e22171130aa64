"""Data and results on object storage, against a real S3-compatible server (SeaweedFS):
``raysup prepare s3://… s3://…``, a sweep whose trials read the Parquet from S3 and whose Tune
results and Train checkpoints go to S3, with endpoint and credentials from a pyarrow URI or the
standard AWS environment variables."""
from __future__ import annotations

import os

import pyarrow.fs as pafs

from raysup.cli import main
from raysup.data.ingest import PreparedData
from raysup.sweep import Sweep, run_sweep


def _files(server, prefix: str) -> list[str]:
    fs, root = pafs.FileSystem.from_uri(server.uri(prefix))
    return [f.path for f in fs.get_file_info(pafs.FileSelector(root, recursive=True)) if f.type == pafs.FileType.File]


def test_prepare_and_sweep_on_s3(s3_server, small_prepared, tmp_path, monkeypatch):
    _, labels = small_prepared
    s3_server.make_bucket("raysup")
    fs, _ = pafs.FileSystem.from_uri(s3_server.uri("raysup"))
    pafs.copy_files(os.path.join(os.path.dirname(labels), "videos"), "raysup/videos", destination_filesystem=fs)

    # raysup prepare s3://… s3://… (Ray Data tasks read the videos and write Parquet on S3)
    assert main(["prepare", s3_server.uri("raysup/videos"), s3_server.uri("raysup/prepared")]) == 0
    with monkeypatch.context() as m:  # plain s3:// URIs take endpoint and keys from AWS_* variables
        for k, v in s3_server.env.items():
            m.setenv(k, v)
        manifest = PreparedData("s3://raysup/prepared").manifest
    assert manifest["counts"]["videos"] == 24 and manifest["counts"]["clips"] == 48

    monkeypatch.chdir(tmp_path)  # nothing may land on the local disk
    s = Sweep("xdc", {"method.k": [4]}, s3_server.uri("raysup/prepared"), labels, s3_server.uri("raysup/results"), "s3_sweep",
              base={"epochs": 1, "batch_size": 8, "method.rounds": 1})
    (result,) = run_sweep(s)
    assert 0 <= result.metrics["probe_video"] <= 1
    files = _files(s3_server, "raysup/results/s3_sweep")
    assert any(os.path.basename(f).startswith("experiment_state") for f in files)
    assert any("/round_0/checkpoint_" in f and f.endswith("checkpoint.pt") for f in files)  # Train checkpoints
    assert any("events.out.tfevents" in f for f in files) and any(f.endswith("result.json") for f in files)
    assert os.listdir(tmp_path) == []
    # the finished sweep is found on S3 again: --resume does not redo it
    (again,) = run_sweep(s, resume=True)
    assert again.metrics["probe_video"] == result.metrics["probe_video"]
