"""``raysup dashboard RUN_OR_SWEEP_DIR``: TensorBoard over a run or a sweep, and where the Ray
dashboard is.

A sweep folder holds Tune's TensorBoard events for every trial (each reported metric: losses,
accuracies, XDC's NMI and cluster statistics, probe accuracies); a ``raysup train`` run folder
holds them under ``tensorboard/``. For a URI (``s3://…``) the event files are mirrored into a
local folder and refreshed while TensorBoard runs. The Ray dashboard (Jobs, Actors, Logs) belongs
to the running cluster, found at ``address``; on a ``ray up`` cluster reach it with
``ray dashboard cluster.yaml``.
"""
from __future__ import annotations

import os
import tempfile
import time

import pyarrow.fs as pafs

from raysup.data.storage import resolve


def mirror_events(uri: str, local: str) -> int:
    """Copy TensorBoard event files under ``uri`` that are new or have grown to the same relative
    paths under ``local``; returns how many were copied."""
    fs, root = resolve(uri)
    copied = 0
    for f in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        if f.type != pafs.FileType.File or "tfevents" not in f.base_name:
            continue
        dest = os.path.join(local, os.path.relpath(f.path, root))
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


def serve(path: str, *, port: int = 6006, host: str = "127.0.0.1", address: str = "auto", refresh_s: float = 30.0) -> None:
    """Start TensorBoard on ``path`` (folder or URI), print its URL and the Ray dashboard's, and
    serve until interrupted."""
    from tensorboard import program

    is_uri = "://" in path
    if not is_uri and not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such folder (a `raysup train` run or a sweep's storage/<name>)")
    logdir = tempfile.mkdtemp(prefix="raysup-tensorboard-") if is_uri else path
    if is_uri:
        mirror_events(path, logdir)
    tb = program.TensorBoard()
    tb.configure(logdir=logdir, host=host, port=port, reload_interval=5)
    print(f"TensorBoard:   {tb.launch()}  (curves of every trial and metric in {path})", flush=True)
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
                mirror_events(path, logdir)
    except KeyboardInterrupt:
        pass
