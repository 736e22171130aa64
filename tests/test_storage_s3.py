"""Data on object storage, against a real S3-compatible server (SeaweedFS): ``raysup prepare
s3://… s3://…`` with endpoint and credentials in pyarrow URIs, and the same data read back
through the standard AWS environment variables; ``raysup train`` writing its metrics and
TensorBoard events there. (Sweeps reading their data from S3 and writing
their results and checkpoints there run in test_experiments.py, with the keys in the URIs, and
in test_dashboard.py, with the keys in the environment.)"""
from __future__ import annotations

import json
import os

import pyarrow.fs as pafs
import pytest

from raysup.cli import main
from raysup.data.ingest import PreparedData
from raysup.data.storage import uri_of
from tests.s3server import SECRET_KEY


def test_prepare_from_and_to_s3(s3_server, small_prepared, monkeypatch):
    _, labels = small_prepared
    s3_server.upload(os.path.join(os.path.dirname(labels), "videos"), "prep/videos")

    # Ray Data tasks read the videos from S3 and write Parquet shards and the manifest to S3
    assert main(["prepare", s3_server.uri("prep/videos"), s3_server.uri("prep/prepared")]) == 0
    data = PreparedData(s3_server.uri("prep/prepared"))
    assert data.manifest["counts"]["videos"] == 24 and data.dataset(["video_id"]).count() == 48

    with monkeypatch.context() as m:  # plain s3:// URIs take endpoint and keys from AWS_* variables
        for k, v in s3_server.env.items():
            m.setenv(k, v)
        assert PreparedData("s3://prep/prepared").manifest == data.manifest


def test_uri_of_keeps_endpoint_and_credentials():
    uri = "s3://KEY:SECRET@bucket/runs/a?endpoint_override=127.0.0.1:9000&scheme=http"
    assert uri_of(uri, "bucket/runs/a/checkpoint_1") == "s3://KEY:SECRET@bucket/runs/a/checkpoint_1?endpoint_override=127.0.0.1:9000&scheme=http"
    assert uri_of("s3://bucket/x", "bucket/x/y") == "s3://bucket/x/y"
    assert uri_of("/local/run", "/local/run/checkpoint_1") == "/local/run/checkpoint_1"


@pytest.mark.slow  # ~20 s; the quick XDC sweep job (conftest xdc_sweep_job) trains on S3 in the default run
def test_train_writes_metrics_and_tensorboard_to_s3(s3_server, small_prepared, capsys):
    data, labels = small_prepared
    s3_server.make_bucket("runs")
    run = s3_server.uri("runs/supervised")
    assert main(["train", "supervised", "--data", data, "--out", run, "--labels", labels, "--set", "epochs=2", "--set", "batch_size=8"]) == 0
    fs, root = pafs.FileSystem.from_uri(run)
    with fs.open_input_stream(f"{root}/metrics.jsonl") as f:
        epochs = [json.loads(line)["epoch"] for line in f.read().decode().splitlines()]
    assert epochs == [0, 1]
    events = fs.get_file_info(pafs.FileSelector(f"{root}/tensorboard"))
    assert events and all(e.base_name.startswith("events.out.tfevents") and e.size > 0 for e in events)
    assert SECRET_KEY not in capsys.readouterr().out
