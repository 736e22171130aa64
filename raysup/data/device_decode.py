"""``decode_on: device``: a jpeg set's cells decoded on the train worker's device, not in Ray Data tasks.

The stream then carries the stored cells (``frames``: a list of T JPEGs, ``flow``: a list of
T−1 grayscale JPEGs [2H, W], dx above dy; :mod:`raysup.data.codec`) with their
``frames_pick``/``flow_pick`` columns. :class:`JpegCollate` (in Ray Data's prefetch threads)
keeps the picked JPEGs as CPU byte tensors and collates every other column as
:class:`raysup.data.ingest.ClipCollate` does; :meth:`DeviceDecode.decode` (in the train loop,
before the step) decodes them with one ``torchvision.io.decode_jpeg`` call per column (batched
nvjpeg on CUDA, libjpeg-turbo on CPU), crops each clip at one box for frames and flow
(:func:`raysup.data.codec.crop_box`: centred, or uniformly random for training) and maps the
flow levels to pixels (:func:`raysup.data.codec.flow_levels`): the same tensors as
:func:`raysup.data.codec.decode_clips` + ``ClipCollate`` — uint8 [B,T,S,S,3] frames, float16
[B,T−1,S,S,2] flow, ``<name>_valid`` [B] bool, zeros where a frame or field was not picked or
the cell is null.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from ray.data.collate_fn import ArrowBatchCollateFn
from torchvision.io import ImageReadMode, decode_jpeg

from raysup.data.codec import PICKS, crop_box, flow_levels
from raysup.data.ingest import ClipCollate
from raysup.data.schema import TensorSpec

MODES = {"frames": ImageReadMode.RGB, "flow": ImageReadMode.GRAY}  # a frame: RGB [3,H,W]; a field: levels [1,2H,W]
DTYPES = {"frames": torch.uint8, "flow": torch.float16}  # what decode_clips writes


@dataclass(frozen=True)
class Jpegs:
    """One column's picked JPEGs of a batch, in row order."""

    images: list[torch.Tensor]  # uint8 [bytes] each, on the CPU (decode_jpeg's input)
    rows: np.ndarray  # [n] int64: the clip of each image
    index: np.ndarray  # [n] int64: its frame (field) in the clip
    valid: np.ndarray  # [B] bool: the clip's cell is not null


@dataclass(frozen=True)
class JpegBatch:
    """A collated batch whose frames and flow are still JPEGs (not a tensor batch: Ray Data
    neither pins nor moves it; :meth:`DeviceDecode.decode` does)."""

    tensors: dict[str, torch.Tensor]  # every other column, as ClipCollate makes them
    jpegs: dict[str, Jpegs]  # "frames", "flow": those the batch has
    rows: int


def column_jpegs(batch: pa.Table, name: str, length: int) -> Jpegs:
    """The JPEGs of ``batch``'s list column ``name`` that its pick column selects (absent: all
    ``length`` of each clip), as zero-copy byte tensors; null cells give none."""
    col = batch.column(name).combine_chunks()
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    picks = batch.column(PICKS[name]).to_pylist() if PICKS[name] in batch.column_names else [None] * len(col)
    pairs = [(r, i) for r in np.flatnonzero(valid).tolist() for i in (range(length) if picks[r] is None else picks[r])]  # (clip, image)
    starts, values = col.offsets.to_numpy(), col.values  # clip r's image i: values[starts[r] + i]
    images = [torch.from_numpy(np.frombuffer(values[int(starts[r]) + i].as_buffer(), np.uint8)) for r, i in pairs]
    rows, index = np.asarray(pairs, np.int64).reshape(-1, 2).T
    return Jpegs(images, rows, index, valid)


class JpegCollate(ArrowBatchCollateFn):
    """Arrow batch of stored cells → :class:`JpegBatch`: ``frames``/``flow`` kept as picked
    JPEGs (their pick columns dropped), the other columns collated by ``ClipCollate`` (pinned
    with ``pin``, for the asynchronous copy to a GPU)."""

    def __init__(self, specs: dict[str, TensorSpec], pin: bool = False):
        self.specs, self.pin = specs, pin

    def __call__(self, batch: pa.Table) -> JpegBatch:
        names = [c for c in PICKS if c in batch.column_names and c in self.specs]
        jpegs = {c: column_jpegs(batch, c, self.specs[c].shape[0]) for c in names}
        rest = batch.drop_columns(names + [p for p in PICKS.values() if p in batch.column_names])
        tensors = ClipCollate(self.specs)(rest)
        return JpegBatch({k: v.pin_memory() for k, v in tensors.items()} if self.pin else tensors, jpegs, batch.num_rows)


@dataclass(frozen=True)
class DeviceDecode:
    """What a train worker needs to decode a jpeg set's cells itself: ``layout`` as
    :meth:`raysup.data.ingest.PreparedData.layout` gives it ({"size", "flow_range", "frames":
    [T,S,S,3] or None, "flow": [T−1,S,S,2] or None})."""

    layout: dict

    def collate(self, specs: dict[str, TensorSpec], pin: bool) -> JpegCollate:
        return JpegCollate(specs, pin)

    def decode(self, batch: JpegBatch, crop: str, device: torch.device, rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        """``batch`` on ``device`` with its JPEGs decoded there, cropped S×S at one box per clip
        (``crop``: "centre" or "random", as :func:`raysup.data.codec.decode_clip`; a clip's first
        decoded image sets its box) and the flow levels mapped to float16 pixels. Host-to-device
        copies do not wait for the device."""
        rng = rng if rng is not None else np.random.default_rng()
        out = {k: v.to(device, non_blocking=True) for k, v in batch.tensors.items()}
        boxes: dict[int, tuple[int, int]] = {}  # clip → (top, left)
        for name, jp in batch.jpegs.items():
            tensor = torch.zeros((batch.rows, *self.layout[name]), dtype=DTYPES[name], device=device)  # [B,T,S,S,C]
            if jp.images:
                x = self.crops(name, jp, crop, device, rng, boxes)  # [n,S,S,C]
                slots = jp.rows * tensor.shape[1] + jp.index  # clip r's image i: row r·T + i of [B·T,S,S,C]
                tensor.view(-1, *tensor.shape[2:]).index_copy_(0, torch.from_numpy(slots).to(device, non_blocking=True), x)
            out[name], out[f"{name}_valid"] = tensor, torch.from_numpy(jp.valid).to(device, non_blocking=True)
        return out

    def crops(self, name: str, jp: Jpegs, crop: str, device: torch.device, rng: np.random.Generator,
              boxes: dict[int, tuple[int, int]]) -> torch.Tensor:
        """``jp``'s images decoded on ``device`` and cropped at their clips' ``boxes`` (drawn by
        :func:`raysup.data.codec.crop_box` for a clip without one): uint8 [n,S,S,3] frames, or
        float16 [n,S,S,2] flow pixels (dx, dy)."""
        size, cut = int(self.layout["size"]), []
        for img, row in zip(decode_jpeg(jp.images, mode=MODES[name], device=device), jp.rows.tolist()):
            img = img if name == "frames" else img.view(2, img.shape[1] // 2, img.shape[2])  # [C,H,W]: a field's dx, dy levels
            if row not in boxes:
                boxes[row] = crop_box(img.shape[1], img.shape[2], size, crop, rng)
            top, left = boxes[row]
            cut.append(img[:, top : top + size, left : left + size])
        x = torch.stack(cut).permute(0, 2, 3, 1).contiguous()  # [n,S,S,C]
        if name == "frames":
            return x
        levels = torch.from_numpy(flow_levels(self.layout["flow_range"])).to(DTYPES[name])  # [256] pixels, as decode_clips stores them
        return levels.to(device, non_blocking=True)[x.int()]
