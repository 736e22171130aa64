"""Paths and URIs: local folders or any pyarrow filesystem URI (``s3://bucket/prefix``)."""
from __future__ import annotations

import json
import os

import pyarrow.fs as pafs


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local path or a URI such as ``s3://b/p?endpoint_override=…``.

    S3 endpoint and credentials come from the URI (``s3://KEY:SECRET@bucket/p?endpoint_override=
    host:port&scheme=http``) or from the standard AWS environment variables and config files
    (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``; an
    instance role on EC2). Ray workers resolve URIs themselves, so environment variables must be
    set where they run (a local ``ray.init`` inherits the driver's; on a cluster use the job's
    ``runtime_env`` or the node's environment).
    """
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    return pafs.FileSystem.from_uri(uri)


def uri_of(uri: str, path: str) -> str:
    """``path`` (on the filesystem of ``uri``, as :func:`resolve` returns it) as a URI with
    ``uri``'s scheme, credentials and ``?query``, so it resolves to the same filesystem."""
    if "://" not in uri:
        return path
    scheme, rest = uri.split("://", 1)
    base, sep, query = rest.partition("?")
    userinfo, at, _ = base.split("/", 1)[0].rpartition("@")
    return f"{scheme}://{userinfo}{at}{path}{sep}{query}"


_SECRET_QUERY_KEYS = ("access_key", "secret_key", "session_token")


def redact(uri: str) -> str:
    """``uri`` without credentials, safe to record or print: ``s3://KEY:SECRET@b/p?x=1`` →
    ``s3://b/p?x=1``; query values of ``access_key``, ``secret_key`` and ``session_token`` are
    replaced by ``***``. Local paths are returned unchanged."""
    if "://" not in uri:
        return uri
    scheme, rest = uri.split("://", 1)
    base, sep, query = rest.partition("?")
    authority, slash, path = base.partition("/")
    authority = authority.rpartition("@")[2]
    if query:
        parts = [p.partition("=") for p in query.split("&")]
        query = "&".join(k + eq + ("***" if k.lower() in _SECRET_QUERY_KEYS else v) for k, eq, v in parts)
    return f"{scheme}://{authority}{slash}{path}{sep}{query}"


def join(uri: str, *parts: str) -> str:
    """Join a path or URI with sub-paths, keeping any ``?query`` of a URI at the end."""
    base, sep, query = uri.partition("?")
    out = base.rstrip("/") + "/" + "/".join(p.strip("/") for p in parts)
    return out + (sep + query if sep else "")


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_json(fs: pafs.FileSystem, path: str):
    with fs.open_input_stream(path) as f:
        return json.loads(f.read().decode())


def write_json(fs: pafs.FileSystem, path: str, obj) -> None:
    """Write JSON so that a reader never sees half a file (temp name, then move)."""
    tmp = f"{path}.tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(json.dumps(obj, indent=1, sort_keys=True).encode())
    fs.move(tmp, path)


def create_exclusive(fs: pafs.FileSystem, path: str, obj) -> bool:
    """Write JSON at ``path`` only if nothing is there; False if something is.

    Atomic on a local filesystem (a hard link of a complete temporary file). Object stores
    offer no create-if-absent here: a check, then a write, so two writers racing within the
    same instant may both succeed (callers read back to detect that)."""
    data = json.dumps(obj, indent=1, sort_keys=True).encode()
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.remove(tmp)
    if exists(fs, path):
        return False
    write_json(fs, path, obj)
    return True


def ensure_empty(uri: str) -> None:
    """Refuse an output folder that holds anything (nothing raysup did not write is touched)."""
    fs, root = resolve(uri)
    if exists(fs, root) and fs.get_file_info(pafs.FileSelector(root)):
        raise FileExistsError(f"--out: {redact(uri)} is not empty; write to a new folder")
