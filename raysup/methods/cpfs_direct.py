"""The cross-pixel flow similarity paper's "direct reg." baseline: the same single-frame
network and sampled pixels as :mod:`raysup.methods.cpfs`, trained to classify each
log-normalised flow component into 16 bins (``cpfs`` with ``method.target=direct``)."""
from __future__ import annotations

from raysup.config import nested_update
from raysup.methods.cpfs import COLUMNS, PAPER_PROTOCOLS, Config, build, check, datasets  # noqa: F401  (the method-module contract)
from raysup.methods.cpfs import PRESETS as CPFS_PRESETS

PRESETS = {name: nested_update(preset, {"method.target": "direct"}) for name, preset in CPFS_PRESETS.items()}
PRESETS["paper"] = nested_update(PRESETS["paper"], {"optim.lr": 0.01})  # papers/cpfs.md L171: "a faster initial learning rate of 0.01"
