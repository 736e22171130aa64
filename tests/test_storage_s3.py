"""Data on object storage, against a real S3-compatible server (SeaweedFS): ``raysup prepare
s3://… s3://…`` with endpoint and credentials in pyarrow URIs, and the same data read back
through the standard AWS environment variables. (Sweeps reading their data from S3 and writing
their results and checkpoints there run in test_experiments.py, with the keys in the URIs, and
in test_dashboard.py, with the keys in the environment.)"""
from __future__ import annotations

import os

import pyarrow.fs as pafs

from raysup.cli import main
from raysup.data.ingest import PreparedData
from raysup.data.storage import uri_of


def test_prepare_from_and_to_s3(s3_server, small_prepared, monkeypatch):
    _, labels = small_prepared
    s3_server.make_bucket("prep")
    fs, _ = pafs.FileSystem.from_uri(s3_server.uri("prep"))
    pafs.copy_files(os.path.join(os.path.dirname(labels), "videos"), "prep/videos", destination_filesystem=fs)

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
