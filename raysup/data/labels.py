"""Evaluation labels: the labels CSV (video_id,label,split) and readers for standard split files.

Labels never enter pretraining data; only evaluation reads them. A `video_id`
is the video's path relative to the source root, without extension,
'/'-separated (`ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01`). Every error names
the file (and line) at fault.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = [
    "LabelRow", "SPLITS", "esc50_labels", "hmdb51_labels", "read_labels_csv", "show_id", "ucf101_labels", "write_labels_csv",
]

SPLITS = ("train", "test")
HEADER = ("video_id", "label", "split")


@dataclass(frozen=True)
class LabelRow:
    """One labelled video."""

    video_id: str
    label: str
    split: str  # "train" | "test"


def _video_id(path: str) -> str:
    """'Class\\v_x.avi' or 'Class/v_x.avi' -> 'Class/v_x'."""
    p = PurePosixPath(path.strip().replace("\\", "/"))
    return str(p.with_suffix("")) if p.suffix else str(p)


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name}: must be an integer from {low} to {high}, got {value!r}")


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return path.read_text(encoding="utf-8-sig")


def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a text file with their 1-based numbers (CRLF and trailing spaces removed)."""
    return [(n, line.strip()) for n, line in enumerate(_read_text(path).splitlines(), 1) if line.strip()]


# ---------------------------------------------------------------- labels CSV


def read_labels_csv(path: str | Path) -> list[LabelRow]:
    """Rows of a labels CSV with header video_id,label,split (extra columns are ignored).

    Ids are kept exactly as written (no stripping, no Unicode normalisation): every id prepare
    makes from a file name, line breaks and surrounding spaces included, round-trips through
    :func:`write_labels_csv`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8-sig") as f:  # newline="": line breaks inside quoted ids stay
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or not set(HEADER) <= {h.strip() for h in header}:
            raise ValueError(f"{path}:1: expected a header with columns {','.join(HEADER)}, got {header!r}")
        col = {h.strip(): i for i, h in enumerate(header)}
        rows, seen = [], {}
        for record in reader:
            n = reader.line_num
            if not any(field.strip() for field in record):
                continue
            if len(record) != len(header):
                raise ValueError(f"{path}:{n}: expected {len(header)} fields, got {len(record)}: {', '.join(map(show_id, record))}")
            row = LabelRow(record[col["video_id"]], record[col["label"]], record[col["split"]].strip())
            if not row.video_id or not row.label:
                raise ValueError(f"{path}:{n}: empty video_id or label")
            if row.split not in SPLITS:
                raise ValueError(f"{path}:{n}: split must be one of {SPLITS}, got {row.split!r}")
            if row.video_id in seen:
                raise ValueError(f"{path}:{n}: video_id {show_id(row.video_id)} already on line {seen[row.video_id]}")
            seen[row.video_id] = n
            rows.append(row)
    return rows


def show_id(video_id: str) -> str:
    """``video_id`` quoted and escaped as ``repr`` does, and combining marks escaped too, so that
    ids which print alike differ: ``'e\\u0301'`` (NFD) and ``'é'`` (NFC), ``' a'`` and ``'a'``,
    ``'a\\u2028b'``."""
    return "".join(ascii(c)[1:-1] if unicodedata.category(c).startswith("M") else c for c in repr(video_id))


def class_index(rows: list[LabelRow]) -> dict[str, int]:
    """Label name → class index, sorted by name (stable across runs and splits)."""
    return {name: i for i, name in enumerate(sorted({r.label for r in rows}))}


def label_of(rows: list[LabelRow]) -> dict[str, int]:
    """Video id → class index of every labelled video."""
    classes = class_index(rows)
    return {r.video_id: classes[r.label] for r in rows}


def write_labels_csv(rows: list[LabelRow], path: str | Path) -> None:
    """Write rows as a labels CSV (header video_id,label,split), RFC 4180 style: CRLF line
    ends, so the csv module quotes every field holding a line break (``\\r`` alone included)."""
    path = Path(path)
    for row in rows:
        if row.split not in SPLITS:
            raise ValueError(f"{path}: split of {show_id(row.video_id)} must be one of {SPLITS}, got {row.split!r}")
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\r\n")
        writer.writerow(HEADER)
        writer.writerows((r.video_id, r.label, r.split) for r in rows)


# ---------------------------------------------------------------- UCF101


def _find_dir(root: Path, name: str, subdirs: tuple[str, ...]) -> Path:
    """The first of root, root/<subdir>... that holds file `name`."""
    for d in (root, *(root / s for s in subdirs)):
        if (d / name).is_file():
            return d
    tried = ", ".join(str(d / name) for d in (root, *(root / s for s in subdirs)))
    raise FileNotFoundError(f"{root}: no {name} (tried {tried})")


def ucf101_labels(root: str | Path, split: int = 1) -> list[LabelRow]:
    """Rows of UCF101 split `split` (1..3) from classInd.txt, trainlistNN.txt and testlistNN.txt.

    root holds those files directly or in ucfTrainTestlist/ or splits/.
    """
    _check_range("split", split, 1, 3)
    d = _find_dir(Path(root), "classInd.txt", ("ucfTrainTestlist", "splits"))
    classes: dict[int, str] = {}
    for n, line in _lines(d / "classInd.txt"):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"{d / 'classInd.txt'}:{n}: expected '<index> <class>', got {line!r}")
        classes[int(parts[0])] = parts[1]
    names = set(classes.values())

    rows = []
    for which in SPLITS:
        path = d / f"{which}list{split:02d}.txt"
        for n, line in _lines(path):
            parts = line.split()
            video_id = _video_id(parts[0])
            label = video_id.split("/")[0] if "/" in video_id else ""
            if len(parts) > 2 or label not in names:
                raise ValueError(f"{path}:{n}: expected '<class>/<video> [<index>]' with a class from classInd.txt, "
                                 f"got {line!r}")
            if len(parts) == 2:
                index = int(parts[1]) if parts[1].isdigit() else None
                if classes.get(index) != label:
                    raise ValueError(f"{path}:{n}: class index {parts[1]} is not {label!r} in classInd.txt")
            rows.append(LabelRow(video_id, label, which))
    return rows


# ---------------------------------------------------------------- HMDB51


def hmdb51_labels(root: str | Path, split: int = 1) -> list[LabelRow]:
    """Rows of HMDB51 split `split` (1..3) from the '<class>_test_split<N>.txt' files.

    root holds them directly or in one subfolder (e.g. testTrainMulti_7030_splits/).
    Each line is '<video>.avi <id>' with 1 = train, 2 = test, 0 = unused (skipped).
    """
    _check_range("split", split, 1, 3)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")
    pattern = f"*_test_split{split}.txt"
    files = sorted(root.glob(pattern)) or sorted(root.glob(f"*/{pattern}"))
    if not files:
        raise FileNotFoundError(f"{root}: no {pattern} files here or in a subfolder")
    rows = []
    for path in files:
        label = path.name[: -len(pattern) + 1]
        for n, line in _lines(path):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ValueError(f"{path}:{n}: expected '<video> <0|1|2>', got {line!r}")
            if parts[1] != "0":
                rows.append(LabelRow(f"{label}/{_video_id(parts[0])}", label, SPLITS[int(parts[1]) - 1]))
    return rows


# ---------------------------------------------------------------- ESC-50


def esc50_labels(root: str | Path, fold: int = 1) -> list[LabelRow]:
    """Rows of ESC-50 from root/meta/esc50.csv: fold `fold` (1..5) is the test split.

    video_id = 'audio/<filename without .wav>', label = category.
    """
    _check_range("fold", fold, 1, 5)
    path = Path(root) / "meta" / "esc50.csv"
    reader = csv.DictReader(_read_text(path).splitlines())
    missing = {"filename", "fold", "category"} - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"{path}:1: missing columns {sorted(missing)} in header {reader.fieldnames!r}")
    rows = []
    for record in reader:
        n = reader.line_num
        filename, record_fold = (record["filename"] or "").strip(), (record["fold"] or "").strip()
        if not filename or not re.fullmatch(r"[1-5]", record_fold):
            raise ValueError(f"{path}:{n}: expected a filename and a fold from 1 to 5, got {record!r}")
        video_id = "audio/" + _video_id(filename)
        split = "test" if int(record_fold) == fold else "train"
        rows.append(LabelRow(video_id, record["category"].strip(), split))
    return rows
