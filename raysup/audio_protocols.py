"""The papers' audio evaluations (GDT: papers/gdt.md L164, L324; XDC: papers/xdc.md L199,
Table 11), run by ``raysup probe --protocol paper --paper-task esc50|dcase`` on a prepared
audio-only set (``raysup prepare --audio-only``). :class:`raysup.protocol_specs.AudioClipsProtocol`:
per recording, ``clips`` sub-clips evenly spaced in time are chosen among the prepared clips
(prepare with a stride short enough to have at least that many, e.g. ESC-50's 5 s recordings
with ``--audio-seconds 2 --clip-stride 0.25``: 13 windows, 10 chosen); the method's tap of
each; a linear layer or a linear SVM fitted on the train recordings' sub-clips; sub-clip scores
averaged per test recording; top-1. A :class:`raysup.protocol_specs.FinetuneProtocol` of an
audio task (XDC's ESC-50 finetuning) runs through :func:`raysup.protocols.run_protocols` on the
same set, after the same checks. ESC-50's five folds and DCASE's splits: one labels CSV each
(``--splits``), the mean printed.
"""
from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa

from raysup.config import ConfigError, TrainConfig
from raysup.data.ingest import PreparedData
from raysup.data.labels import class_index, label_of, read_labels_csv
from raysup.data.tables import join_columns
from raysup.evaluate import labelled
from raysup.features import embed
from raysup.protocol_specs import AudioClipsProtocol, FinetuneProtocol, FrozenProtocol
from raysup.protocols import build_tap_features, frozen_scores, run_protocols, video_accuracy
from raysup.video_sums import matrix


def evenly_spaced(count: int, n: int) -> np.ndarray:
    """``n`` clip indices of ``count`` consecutive ones, evenly spaced from the first to the last."""
    return np.linspace(0, count - 1, n).round().astype(np.int64)


def audio_window_s(data: PreparedData) -> float:
    """Seconds of audio per prepared clip (prepare's ``--audio-seconds``, else the clip's span)."""
    p = data.manifest["params"]
    return p["audio_seconds"] or p["clip_frames"] / p["fps"]


def check_audio(p: AudioClipsProtocol | FinetuneProtocol, data: PreparedData, counts: dict[str, int]) -> None:
    """The prepared set serves ``p``: audio windows of ``p.seconds`` (a finetuning's 0: any), and
    per recording ``p.clips`` windows (a finetuning's: its ``test_clips``)."""
    if "audio" not in data.specs:
        raise ConfigError(f"--paper-task {p.task}: the prepared data has no audio")
    seconds = audio_window_s(data)
    if p.seconds and abs(seconds - p.seconds) > 1e-6:
        raise ConfigError(f"--paper-task {p.task}: the paper's sub-clips are {p.seconds:g} s, the prepared audio windows {seconds:g} s "
                          f"(prepare with --audio-seconds {p.seconds:g})")
    clips = p.test_clips if isinstance(p, FinetuneProtocol) else p.clips
    short = min(counts, key=counts.get)
    if counts[short] < clips:
        raise ConfigError(f"--paper-task {p.task}: {short} has {counts[short]} prepared clips, the protocol takes {clips} "
                          "evenly spaced ones per recording (prepare with a shorter --clip-stride)")


def labelled_counts(data: PreparedData, rows) -> tuple[dict[str, str], dict[str, int]]:
    """The prepared recordings the labels ``rows`` name: (their split, their clip counts)."""
    split = labelled(rows, set(data.video_ids))
    return split, {v: data.video_clips[v] for v in sorted(split)}


def run_audio_protocols(cfg: TrainConfig, data: PreparedData, labels_csv: str, checkpoint: str | None,
                        protocols: tuple[AudioClipsProtocol | FinetuneProtocol, ...], out_dir: str, *, epochs: int | None = None,
                        clips_per_epoch: int | None = None, actors: int = 1) -> dict[str, float]:
    """Test top-1 per protocol key on the labels CSV's train/test recordings; a finetuning runs
    in ``out_dir/<key>`` (``epochs``, ``clips_per_epoch``: :func:`raysup.protocols.run_protocols`'s)."""
    rows = read_labels_csv(labels_csv)
    split, counts = labelled_counts(data, rows)
    label, classes = label_of(rows), len(class_index(rows))
    clips = data.dataset(["video_id", "clip_index", "audio"], crop=None)
    results = {}
    for p in protocols:
        check_audio(p, data, counts)
        if isinstance(p, FinetuneProtocol):
            results |= run_protocols(cfg, data, labels_csv, checkpoint, out_dir, (p,), epochs=epochs, clips_per_epoch=clips_per_epoch)
            continue
        picked = {v: evenly_spaced(c, p.clips) for v, c in counts.items()}
        feats = {}
        for part in ("train", "test"):
            ids = [v for v in picked if split[v] == part]
            table = pa.table({"video_id": pa.array([v for v in ids for _ in picked[v]], pa.string()),
                              "clip_index": pa.array(np.concatenate([picked[v] for v in ids]), pa.int32())})  # the prepared column's type
            build = functools.partial(build_tap_features, taps={p.key: (p.tap, 0)})
            feats[part] = gathered(embed(data.decode(join_columns(clips, ["video_id", "clip_index"], table), crop="centre"),
                                         cfg, build, data.specs, checkpoint, actors=actors), p.key)
        (train_ids, x_train), (test_ids, x_test) = feats["train"], feats["test"]
        ids = sorted(counts)
        index = {v: i for i, v in enumerate(ids)}
        y = np.array([label[v] for v in ids])
        frozen = FrozenProtocol(key=p.key, tap=p.tap, linear=p.linear, svm_c=p.svm_c, test_clips=p.clips)
        scores = frozen_scores(frozen, p.classifier, x_train, y[[index[v] for v in train_ids]], x_test, classes, cfg.seed)
        results[p.key] = video_accuracy(scores, np.array([index[v] for v in test_ids]), y, np.array([split[v] == "test" for v in ids]))
    return results


def gathered(features, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(video ids [N], the ``key`` column [N,D]) of every row of a feature dataset, in this
    process: the audio sets are small (ESC-50 2,000 recordings × 10 sub-clips, DCASE 100 × 60;
    papers/gdt.md L162-164) and LinearSVC fits on every clip at once."""
    parts = list(features.iter_batches(batch_format="pyarrow", batch_size=None))
    if not parts:
        raise ValueError("no clips to extract features from")
    table = pa.concat_tables(parts)
    return table.column("video_id").to_numpy(zero_copy_only=False).astype(str), matrix(table.column(key))
