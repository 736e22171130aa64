"""Paths and URIs: local folders or any pyarrow filesystem URI (``s3://bucket/prefix``)."""
from __future__ import annotations

import functools
import json
import os
import re
import sys
from urllib.parse import quote, unquote

import pyarrow.fs as pafs

# ``scheme://KEY:SECRET@``: the key holds no '/' (so an '@' later in a path is not taken for
# one), the secret may (AWS secret keys hold '/', '+' and '='). Parsing ends the secret at its
# first '@'; redacting at the last '@' of the word, so a secret holding '@' never shows.
_USERINFO = r"([a-z][a-z0-9+.-]*://)([^\s:/@?#]*)(?::({secret}))?@"
_KEYS_IN_URI = re.compile(_USERINFO.format(secret=r"[^\s@?#]*"), re.IGNORECASE)
_KEYS_IN_TEXT = re.compile(_USERINFO.format(secret=r"[^\s?#]*"), re.IGNORECASE)
_SECRET_PARAM = re.compile(r"([?&](?:access_key|secret_key|session_token)=)[^&\s#'\"]*", re.IGNORECASE)


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local path or a URI such as ``s3://b/p?endpoint_override=…``.

    S3 credentials come from the standard AWS chain (``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``; ``AWS_PROFILE`` and ``~/.aws``; an
    instance role), the endpoint from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``
    (``http://host:port``) or the URI's ``?endpoint_override=host:port&scheme=http``. Keys in
    the URI (``s3://KEY:SECRET@bucket/p``, the secret as is or percent-encoded) still work but
    warn once (:func:`warn_keys_in_uri`). Ray workers resolve URIs themselves: a local
    ``ray.init`` inherits the driver's environment; on a cluster use the nodes' instance role or
    profile (docs/scaling-out.md).
    """
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    if redact(uri) != uri:
        warn_keys_in_uri()
    m = _KEYS_IN_URI.match(uri)
    if m and m.group(3) is not None:  # pyarrow's URI parser refuses a '/' in the secret: percent-encode it
        uri = f"{m.group(1)}{quote(unquote(m.group(2)), safe='')}:{quote(unquote(m.group(3)), safe='')}@{uri[m.end():]}"
    return pafs.FileSystem.from_uri(uri)


@functools.cache
def warn_keys_in_uri() -> None:
    """Say once per process, on stderr, that keys in URIs leak (and what to do instead)."""
    print("raysup: warning: access keys in an s3:// URI end up in Ray's job table (every driver's command line, on the "
          "dashboard's Jobs page): give them by AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, an AWS profile or an instance "
          "role instead, the endpoint by AWS_ENDPOINT_URL (docs/scaling-out.md)", file=sys.stderr, flush=True)


def uri_of(uri: str, path: str) -> str:
    """``path`` (on the filesystem of ``uri``, as :func:`resolve` returns it) as a URI with
    ``uri``'s scheme, credentials and ``?query``, so it resolves to the same filesystem."""
    if "://" not in uri:
        return path
    scheme = uri.split("://", 1)[0]
    m = _KEYS_IN_URI.match(uri)
    userinfo = uri[len(scheme) + 3 : m.end()] if m else ""
    _, sep, query = uri.partition("?")
    return f"{scheme}://{userinfo}{path}{sep}{query}"


def redact(text: str) -> str:
    """``text`` (a URI, or a message or traceback holding URIs) without credentials, safe to
    record or print: ``s3://KEY:SECRET@b/p?x=1`` → ``s3://b/p?x=1``, whatever the secret holds
    ('/', '+', '=', percent-encoded or not); values of ``access_key``, ``secret_key`` and
    ``session_token`` query parameters become ``***``. Local paths are returned unchanged."""
    return _SECRET_PARAM.sub(r"\1***", _KEYS_IN_TEXT.sub(r"\1", text))


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
