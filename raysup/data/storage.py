"""Paths and URIs: local folders or any pyarrow filesystem URI (``s3://bucket/prefix``)."""
from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
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

    Local filesystem: atomic (a hard link of a complete temporary file). S3: one PUT with
    ``If-None-Match: *``, which S3 and recent S3-compatible servers (SeaweedFS, MinIO) refuse
    with 412 when the object exists, so of two writers racing exactly one wins. A server that
    ignores the header is detected (a second conditional PUT of the same object must be refused);
    there, and where the request cannot be signed (credentials neither in the URI nor in the
    ``AWS_*`` environment variables, e.g. an instance role), a warning on stderr says so and it
    falls back to check-then-write, so two writers racing within the same instant may both
    succeed (callers read back to narrow that). Other filesystems: check-then-write."""
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
    if isinstance(fs, pafs.S3FileSystem):
        created = _s3_create_exclusive(fs, path, data)
        if created is not None:
            return created
    if exists(fs, path):
        return False
    write_json(fs, path, obj)
    return True


def ensure_empty(uri: str) -> None:
    """Refuse an output folder that holds anything (nothing raysup did not write is touched)."""
    fs, root = resolve(uri)
    if exists(fs, root) and fs.get_file_info(pafs.FileSelector(root)):
        raise FileExistsError(f"--out: {redact(uri)} is not empty; write to a new folder")


def _s3_create_exclusive(fs: pafs.S3FileSystem, path: str, data: bytes) -> bool | None:
    """:func:`create_exclusive` on S3 by conditional PUTs; None (after a warning) where the
    server ignores ``If-None-Match`` or the request cannot be signed."""
    request = _S3Request.of(fs)
    if request is None:
        why = "its credentials come from neither the URI nor the AWS_* environment variables"
    else:
        status = request.put(path, data, {"If-None-Match": "*"})
        if status in (409, 412):  # 409: another conditional write of it is in flight
            return False
        if status == 200 and request.put(path, data, {"If-None-Match": "*"}) in (409, 412):
            return True
        why = f"the server ignores If-None-Match (HTTP {status})" if status == 200 else f"the server refuses If-None-Match (HTTP {status})"
    print(f"raysup: warning: cannot create {path} atomically on S3 ({why}): checking, then writing; "
          "two writers starting within the same instant may both succeed", file=sys.stderr)
    return None


@dataclass(frozen=True)
class _S3Request:
    """Just enough of S3 for a signed PUT with extra headers (pyarrow cannot send them):
    Signature Version 4 (docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html)
    over urllib, with the endpoint and credentials the filesystem was given (URI or ``AWS_*``
    environment variables)."""

    endpoint: str  # scheme://host[:port]
    virtual: bool  # bucket in the host name (AWS's default) rather than in the path
    region: str
    key: str
    secret: str
    token: str

    @classmethod
    def of(cls, fs: pafs.S3FileSystem) -> _S3Request | None:
        opts = fs.__reduce__()[1][0]  # the options pyarrow resolved from the URI (its pickled form)
        key = opts["access_key"] or os.environ.get("AWS_ACCESS_KEY_ID", "")
        secret = opts["secret_key"] or os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        if not key or not secret or opts["anonymous"]:
            return None
        token = opts["session_token"] if opts["access_key"] else os.environ.get("AWS_SESSION_TOKEN", "")
        region = fs.region or "us-east-1"
        if opts["endpoint_override"]:
            host = opts["endpoint_override"]
            endpoint = host if "://" in host else f"{opts['scheme'] or 'https'}://{host}"
        else:
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
        virtual = not endpoint or opts["force_virtual_addressing"]
        return cls((endpoint or f"https://s3.{region}.amazonaws.com").rstrip("/"), virtual, region, key, secret, token or "")

    def put(self, path: str, data: bytes, headers: dict[str, str]) -> int:
        """PUT ``data`` at ``bucket/key``; the HTTP status."""
        bucket, _, key = path.partition("/")
        scheme, _, host = self.endpoint.partition("://")
        host, url_path = (f"{bucket}.{host}", "/" + quote(key, safe="/~")) if self.virtual else (host, "/" + quote(path, safe="/~"))
        now = time.gmtime()
        amz_date, day = time.strftime("%Y%m%dT%H%M%SZ", now), time.strftime("%Y%m%d", now)
        signed = {"host": host, "x-amz-content-sha256": hashlib.sha256(data).hexdigest(), "x-amz-date": amz_date,
                  **({"x-amz-security-token": self.token} if self.token else {}), **{k.lower(): v for k, v in headers.items()}}
        names = ";".join(sorted(signed))
        canonical = "\n".join(["PUT", url_path, "", *(f"{k}:{signed[k]}" for k in sorted(signed)), "", names, signed["x-amz-content-sha256"]])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signing_key = f"AWS4{self.secret}".encode()
        for part in (day, self.region, "s3", "aws4_request"):
            signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
        signed["authorization"] = f"AWS4-HMAC-SHA256 Credential={self.key}/{scope}, SignedHeaders={names}, Signature={signature}"
        request = urllib.request.Request(f"{scheme}://{host}{url_path}", data=data, method="PUT", headers=signed)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status
        except urllib.error.HTTPError as e:
            return e.code
