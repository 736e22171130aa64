"""The cross-pixel flow similarity paper's "direct reg." baseline: the same single-frame
network and sampled pixels as :mod:`raysup.methods.cpfs`, trained to classify each
log-normalised flow component into 16 bins (``cpfs`` with ``method.target=direct``)."""
from __future__ import annotations

import dataclasses

from raysup.config import nested_update
from raysup.methods.cpfs import COLUMNS, Config, build, check, datasets  # noqa: F401  (the method-module contract)
from raysup.methods.cpfs import PAPER_PROTOCOLS as CPFS_PROTOCOLS
from raysup.methods.cpfs import PRESETS as CPFS_PRESETS

PRESETS = {name: nested_update(preset, {"method.target": "direct"}) for name, preset in CPFS_PRESETS.items()}
PRESETS["paper"] = nested_update(PRESETS["paper"], {"optim.lr": 0.01})  # papers/cpfs.md L171: "a faster initial learning rate of 0.01"

# cpfs' protocols with the "Ours direct reg." rows' numbers (papers/cpfs.md Table 2 L221, Table 1 L188)
PUBLISHED = {"imagenet": (("conv1", 14.0), ("conv2", 22.6), ("conv3", 25.3), ("conv4", 25.0), ("conv5", 23.0)), "voc07": (("VOC07 cls mAP", 61.4),)}
PAPER_PROTOCOLS = tuple(dataclasses.replace(p, published=PUBLISHED.get(p.task, p.published)) for p in CPFS_PROTOCOLS)
