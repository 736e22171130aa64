"""``raysup dashboard RUN_OR_SWEEP_DIR``: TensorBoard over a run or a sweep, and where the Ray
dashboard is.

A sweep folder holds one TensorBoard entry per trial under ``tensorboard/``, named by the
trial's settings (``method.k=16``: each reported metric per epoch, losses, accuracies, XDC's NMI
and cluster statistics, then the probe accuracies, and the settings with the final metrics as
hparams); a ``raysup train`` run folder holds its curves under ``tensorboard/`` too. TensorBoard
opens that folder (a sweep from before it existed: the whole folder, Tune's ``trial_…`` entries). For a URI (``s3://…``) the event files are mirrored into a
local folder and refreshed while TensorBoard runs; an object whose key would land outside that
folder is skipped with a warning, and a URI is shown without its credentials. The Ray dashboard (Jobs, Actors, Logs) belongs
to the running cluster, found at ``address``; on a ``ray up`` cluster reach it with
``ray dashboard cluster.yaml``.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

import pyarrow.fs as pafs

from raysup.data.storage import join, redact, resolve


def mirror_path(local: str, root: str, path: str) -> str | None:
    """Where the object ``path`` (listed under ``root``) is mirrored in the folder ``local``, or
    None when it would land outside it: a path not under ``root``, an empty, ``.`` or ``..``
    segment (so nothing absolute-looking either), or a symlink inside ``local`` that leads out."""
    if not path.startswith(root.rstrip("/") + "/"):
        return None
    parts = path[len(root.rstrip("/")) + 1 :].split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    dest = os.path.join(local, *parts)
    inside = os.path.realpath(local)
    return dest if os.path.realpath(dest).startswith(inside + os.sep) else None


def mirror_events(uri: str, local: str, rejected: set[str] | None = None) -> int:
    """Copy TensorBoard event files under ``uri`` that are new or have grown to the same relative
    paths under ``local``; returns how many were copied. An object that :func:`mirror_path`
    places outside ``local`` is never written: it is named in one warning line on stderr (once
    per key when the caller keeps ``rejected`` across calls)."""
    fs, root = resolve(uri)
    rejected = set() if rejected is None else rejected
    copied = 0
    for f in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        if f.type != pafs.FileType.File or "tfevents" not in f.base_name:
            continue
        dest = mirror_path(local, root, f.path)
        if dest is None:
            if f.path not in rejected:
                print(f"raysup dashboard: warning: skipped {f.path!r}: its key leads outside the mirror folder {local}",
                      file=sys.stderr, flush=True)
                rejected.add(f.path)
            continue
        if os.path.exists(dest) and os.path.getsize(dest) == f.size:
            continue
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        pafs.copy_files(f.path, dest, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        copied += 1
    return copied


def ray_dashboard_url(address: str) -> str | None:
    """The dashboard URL of the Ray cluster at ``address`` (``auto``: the one running here), or
    None when there is none. Connects briefly as a driver; never starts a cluster."""
    import ray

    try:
        ctx = ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except ConnectionError:
        return None
    url = ctx.dashboard_url
    ray.shutdown()
    return f"http://{url}" if url else None


def board(path: str) -> str:
    """The folder (or URI) TensorBoard shows for a run or sweep ``path``: its ``tensorboard/``
    when there is one, else ``path`` itself."""
    fs, root = resolve(path)
    inner = f"{root.rstrip('/')}/tensorboard"
    if fs.get_file_info(inner).type != pafs.FileType.Directory:
        return path
    return join(path, "tensorboard")


def serve(path: str, *, port: int = 6006, host: str = "127.0.0.1", address: str = "auto", refresh_s: float = 30.0) -> None:
    """Start TensorBoard on ``path`` (folder or URI), print its URL and the Ray dashboard's, and
    serve until interrupted."""
    from tensorboard import program

    is_uri = "://" in path
    if not is_uri and not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such folder (a `raysup train` run or a sweep's storage/<name>)")
    events = board(path)
    logdir = tempfile.mkdtemp(prefix="raysup-tensorboard-") if is_uri else events
    rejected: set[str] = set()
    if is_uri:
        mirror_events(events, logdir, rejected)
    tb = program.TensorBoard()
    tb.configure(logdir=logdir, host=host, port=port, reload_interval=5)
    print(f"TensorBoard:   {tb.launch()}  (curves of every trial and metric in {redact(path)})", flush=True)
    dashboard = ray_dashboard_url(address)
    if dashboard:
        print(f"Ray dashboard: {dashboard}  (Jobs, Actors, Logs; API token in ~/.ray/auth_token)", flush=True)
    else:
        print(f"Ray dashboard: no Ray cluster at {address!r}; for a `ray up` cluster run "
              "`ray dashboard cluster.yaml` and open http://localhost:8265", flush=True)
    try:
        while True:
            time.sleep(refresh_s)
            if is_uri:
                mirror_events(events, logdir, rejected)
    except KeyboardInterrupt:
        pass
