"""No credential is printed, logged or recorded (issue 26). Keys come from the standard AWS chain
(here: the environment, pointing at the real SeaweedFS server); keys in a URI still work, warn
once, and never show, whatever the secret holds: the attacks use a secret with '/', '+' and '='
(as real AWS secret keys have), raw and percent-encoded, and check stdout, stderr and the log."""
from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pyarrow.fs as pafs
import pytest
import torch

from raysup.cli import main
from raysup.data.storage import redact, resolve, uri_of, warn_keys_in_uri
from tests.s3server import HOSTILE_ACCESS_KEY, HOSTILE_SECRET_KEY

ROOT = os.path.join(os.path.dirname(__file__), "..")
SECRET_PARTS = ("wJalrXUt", "K7MDENG", "bPxRfiCY")  # HOSTILE_SECRET_KEY between its '/', '+' and '='
assert all(p in HOSTILE_SECRET_KEY for p in SECRET_PARTS)


def hostile_uri(server, path: str, *, secret: str = HOSTILE_SECRET_KEY) -> str:
    """``s3://KEY:SECRET@path?endpoint…`` with the secret written as is ('/', '+', '=' included)."""
    return f"s3://{HOSTILE_ACCESS_KEY}:{secret}@{path}?endpoint_override={server.endpoint}&scheme=http"


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for part in SECRET_PARTS:
            assert part not in text, text


def _logs(folder) -> str:
    return "".join(Path(p).read_text() for p in glob.glob(f"{folder}/*.log"))


def test_redact_any_secret():
    s = HOSTILE_SECRET_KEY
    for secret in (s, quote(s, safe="")):
        uri = f"s3://AKIA:{secret}@bucket/a/b?endpoint_override=h:1&scheme=http"
        assert redact(uri) == "s3://bucket/a/b?endpoint_override=h:1&scheme=http"
        assert uri_of(uri, "bucket/a/b/checkpoint_1") == f"s3://AKIA:{secret}@bucket/a/b/checkpoint_1?endpoint_override=h:1&scheme=http"
        # as messages and tracebacks hold them: quoted, several in one word, after a '='
        text = f"Cannot parse URI: '{uri}' due to '/'\n  ('s3://K:{secret}@b/x','s3://K:{secret}@b/y') data={uri}"
        assert_no_secret(redact(text))
    assert redact("s3://K:p@ss/w@rd@bucket/x") == "s3://bucket/x"  # an '@' in the secret too
    assert redact("s3://bucket/me@home.mp4") == "s3://bucket/me@home.mp4"  # an '@' in a path is no secret
    assert redact("s3://b/p?region=x&secret_key=a/b+c=&access_key=K") == "s3://b/p?region=x&secret_key=***&access_key=***"
    assert redact("/local/path") == "/local/path"


def test_keys_in_a_uri_work_whatever_the_secret_holds_and_warn_once(s3_server, capsys):
    warn_keys_in_uri.cache_clear()
    for secret in (HOSTILE_SECRET_KEY, quote(HOSTILE_SECRET_KEY, safe="")):
        fs, path = resolve(hostile_uri(s3_server, "ready/hostile.txt", secret=secret))
        with fs.open_output_stream(path) as f:
            f.write(b"x")
        assert fs.get_file_info(path).size == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning: access keys in an s3:// URI end up in Ray's job table" in err, err
    assert "AWS_ACCESS_KEY_ID" in err and "AWS_ENDPOINT_URL" in err


def test_credentials_from_the_environment(s3_server, capsys, monkeypatch):
    """The documented way: keys and endpoint in the standard AWS variables, plain ``s3://`` URIs."""
    warn_keys_in_uri.cache_clear()
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", HOSTILE_SECRET_KEY)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", HOSTILE_ACCESS_KEY)
    for endpoint in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        with monkeypatch.context() as m:
            m.delenv("AWS_ENDPOINT_URL")
            m.setenv(endpoint, s3_server.env["AWS_ENDPOINT_URL"])
            fs, path = resolve("s3://ready/from-env.txt")
            with fs.open_output_stream(path) as f:
                f.write(b"env")
            assert fs.get_file_info(path).size == 3
    assert capsys.readouterr().err == ""  # no warning


def test_cli_errors_never_show_the_secret(s3_server, tmp_path, capsys, monkeypatch):
    """Messages naming a URI (ingest, checkpoint), a URI pyarrow cannot use, --debug tracebacks
    and argparse's usage errors: stdout, stderr and the log file stay clean."""
    monkeypatch.setenv("RAYSUP_LOG_DIR", str(tmp_path / "logs"))
    missing = hostile_uri(s3_server, "ready/no-such-prefix")
    cases = [
        (["train", "supervised", "--data", missing, "--out", str(tmp_path / "r")], 2, "is not a prepared dataset"),
        (["--debug", "train", "supervised", "--data", missing, "--out", str(tmp_path / "r")], 2, "Traceback"),
        (["probe", missing, "--data", missing, "--labels", "l.csv"], 2, "no complete checkpoint under s3://ready/no-such-prefix"),
        (["train", "supervised", "--data", hostile_uri(s3_server, "ready/x", secret="bad/se+cret=K7MDENG"), "--out", "r"], 1, "internal error"),
        (["train", "supervised", "--data", "d", "--out", "r", "--labls", missing], None, "unrecognized arguments: --labls s3://ready/"),
    ]
    for argv, code, shown in cases:
        if code is None:
            with pytest.raises(SystemExit):
                main(argv)
        else:
            assert main(argv) == code
        out, err = capsys.readouterr()
        assert shown in err, err
        assert_no_secret(out, err)
    assert "Traceback" in _logs(tmp_path / "logs")
    assert_no_secret(_logs(tmp_path / "logs"))


def test_messages_name_uris_without_keys(s3_server):
    """What ingest, checkpoint and load_weights raise names the URI without its keys (such
    messages also reach Tune's error.txt and Python's own tracebacks, not only the CLI)."""
    from raysup.checkpoint import latest_checkpoint
    from raysup.data.ingest import PreparedData
    from raysup.train import load_weights

    missing = hostile_uri(s3_server, "ready/no-such-prefix")
    fs, path = resolve(hostile_uri(s3_server, "ready/other-model/checkpoint.pt"))
    with fs.open_output_stream(path) as f:
        torch.save({"model": {"bogus": torch.zeros(1)}}, f)
    calls = [lambda: PreparedData(missing).manifest, lambda: latest_checkpoint(missing),
             lambda: load_weights(torch.nn.Linear(1, 1), hostile_uri(s3_server, "ready/other-model"))]
    for call in calls:
        with pytest.raises(Exception) as e:  # each its own kind; the message is checked
            call()
        assert "s3://ready/" in str(e.value), e.value
        assert_no_secret(str(e.value))


def test_visualize_embeddings_prints_no_secret(ray_session, small_prepared, s3_server, tmp_path, capsys):
    from raysup.config import to_dict
    from raysup.data.ingest import PreparedData
    from raysup.methods import make_config, method_module

    data = PreparedData(small_prepared[0])
    cfg = make_config("cpfs", "tiny")
    ckpt = tmp_path / "run" / "train" / "checkpoint_000000"
    ckpt.mkdir(parents=True)
    torch.save({"model": method_module("cpfs").build(cfg, data.specs).state_dict(), "config": to_dict(cfg)}, ckpt / "checkpoint.pt")
    out = hostile_uri(s3_server, "ready/embeddings")
    assert main(["visualize-embeddings", str(tmp_path / "run"), "--data", data.uri, "--out", out, "--clips", "1"]) == 0
    printed, err = capsys.readouterr()
    assert "wrote 1 PNGs (frame | flow | embeddings) to s3://ready/embeddings" in printed, printed
    assert_no_secret(printed, err)
    fs, path = resolve(out)
    assert fs.get_file_info(f"{path}/clip_00.png").size > 1000


def test_experiment_script_errors_are_one_line(ray_session, s3_server, small_prepared, tmp_path, capsys, monkeypatch):
    """A wrong --data: one line and exit 2, the traceback redacted in the log (--debug: on stderr)."""
    from raysup.sweep import Experiment, main

    warn_keys_in_uri.cache_clear()
    monkeypatch.setenv("RAYSUP_LOG_DIR", str(tmp_path / "logs"))
    argv = ["--data", hostile_uri(s3_server, "ready/no-such-prefix"), "--labels", small_prepared[1], "--storage", str(tmp_path / "s")]

    def run(*extra: str) -> tuple[str, str]:
        with pytest.raises(SystemExit) as e:
            main(Experiment("xdc", "t", name="xdc_k_sweep", grid={"method.k": [2]}, paper_grid={}), argv=[*argv, *extra])
        assert e.value.code == 2
        out, err = capsys.readouterr()
        assert_no_secret(out, err)
        return out, err

    err = run()[1].splitlines()
    assert len(err) == 2 and "warning: access keys" in err[0], err
    assert ": error: s3://ready/no-such-prefix?endpoint_override=" in err[1] and "is not a prepared dataset" in err[1], err
    assert "Traceback" in run("--debug")[1]
    assert "Traceback" in _logs(tmp_path / "logs")
    assert_no_secret(_logs(tmp_path / "logs"))


@pytest.mark.slow  # ~60 s: its own local Ray, whose workers must get the credentials from the environment
def test_prepare_with_credentials_from_the_environment(s3_server, small_prepared):
    """``raysup prepare`` from S3 to S3 with the keys and endpoint only in the AWS variables: the
    driver and the Ray Data workers of a local Ray read and write, and nothing warns."""
    videos = os.path.join(os.path.dirname(small_prepared[1]), "videos")
    s3_server.upload(videos, "envprep/videos")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    env.update(s3_server.env, PYTHONPATH=ROOT)
    res = subprocess.run([sys.executable, "-m", "raysup", "prepare", "s3://envprep/videos", "s3://envprep/prepared"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "24 prepared" in res.stdout and "warning" not in res.stderr, res.stdout + res.stderr
    fs, _ = pafs.FileSystem.from_uri(s3_server.uri("envprep"))
    assert fs.get_file_info("envprep/prepared/manifest.json").size > 0
