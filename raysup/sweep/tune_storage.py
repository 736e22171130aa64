"""A storage filesystem for Tune that never writes credentials: Tune pickles it into the sweep's
folder (tuner.pkl, experiment_state)."""
from __future__ import annotations

import pyarrow.fs as pafs


class _KeylessS3(pafs.S3FileSystem):
    """An S3 filesystem that pickles without its access keys: Tune pickles its storage
    filesystem into the sweep's folder (tuner.pkl, experiment_state). Unpickled elsewhere it
    takes keys from the environment; Tune's trial processes never use it (they report no
    checkpoints), and a restore passes this one again. Copies in this process (Tune
    deep-copies its experiment spec) are this object, keys included."""

    def __reduce__(self):
        rebuild, (kwargs,) = super().__reduce__()
        return rebuild, ({**kwargs, "access_key": None, "secret_key": None, "session_token": None},)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


def tune_filesystem(fs: pafs.FileSystem) -> pafs.FileSystem:
    """``fs`` as Tune may pickle it: an S3 filesystem without its keys, anything else as is."""
    if isinstance(fs, pafs.S3FileSystem):
        return _KeylessS3(**fs.__reduce__()[1][0])
    return fs
