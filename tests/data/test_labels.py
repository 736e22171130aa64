"""Labels CSV round trip and the UCF101 / HMDB51 / ESC-50 split readers, on small hand-written
fixture files shaped like the official ones (CRLF, trailing spaces, subfolders)."""
from __future__ import annotations

from pathlib import Path

import pytest

from raysup.data.labels import (
    LabelRow,
    esc50_labels,
    hmdb51_labels,
    read_labels_csv,
    show_id,
    ucf101_labels,
    write_labels_csv,
)
from raysup.data.synthetic import SynthConfig, make_synthetic


def write(path: Path, text: str, crlf: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", "\r\n" if crlf else "\n").encode())
    return path


# ---------------------------------------------------------------- labels CSV


def test_labels_csv_round_trip(tmp_path):
    rows = [
        LabelRow("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01", "ApplyEyeMakeup", "train"),
        LabelRow("audio/1-100032-A-0", "dog, barking", "test"),  # a comma survives quoting
    ]
    write_labels_csv(rows, tmp_path / "labels.csv")
    assert (tmp_path / "labels.csv").read_text().splitlines()[0] == "video_id,label,split"
    assert read_labels_csv(tmp_path / "labels.csv") == rows


def test_read_labels_csv_tolerates_extra_columns_crlf_and_blank_lines(tmp_path):
    path = write(tmp_path / "l.csv", "split,video_id,label,note\ntest,a/b,A,x\n\ntrain,a/c,A,y\n", crlf=True)
    assert read_labels_csv(path) == [LabelRow("a/b", "A", "test"), LabelRow("a/c", "A", "train")]


@pytest.mark.parametrize(
    "text, where, what",
    [
        ("", ":1:", "header"),
        ("id,label,split\na,A,train\n", ":1:", "header"),
        ("video_id,label,split\na,A,train\nb,B,valid\n", ":3:", "split"),
        ("video_id,label,split\na,A\n", ":2:", "fields"),
        ("video_id,label,split\na,,train\n", ":2:", "empty"),
        ("video_id,label,split\na,A,train\na,A,test\n", ":3:", "already on line 2"),
    ],
)
def test_read_labels_csv_errors_name_file_and_line(tmp_path, text, where, what):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(ValueError, match=rf"bad\.csv{where}.*{what}"):
        read_labels_csv(path)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_labels_csv(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="split"):
        write_labels_csv([LabelRow("a", "A", "val")], tmp_path / "x.csv")


# ---------------------------------------------------------------- UCF101

CLASS_IND = "1 ApplyEyeMakeup\n2 HandstandPushups\n"
TRAIN01 = "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nHandstandPushups/v_HandStandPushups_g08_c01.avi 2\n"
TEST01 = "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\nHandstandPushups/v_HandStandPushups_g01_c01.avi\n"
UCF_ROWS = [
    LabelRow("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01", "ApplyEyeMakeup", "train"),
    LabelRow("HandstandPushups/v_HandStandPushups_g08_c01", "HandstandPushups", "train"),
    LabelRow("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01", "ApplyEyeMakeup", "test"),
    LabelRow("HandstandPushups/v_HandStandPushups_g01_c01", "HandstandPushups", "test"),
]


@pytest.mark.parametrize("sub", ["", "ucfTrainTestlist", "splits"])
def test_ucf101_labels_from_official_list_files(tmp_path, sub):
    d = tmp_path / sub
    for name, text in (("classInd.txt", CLASS_IND), ("trainlist01.txt", TRAIN01), ("testlist01.txt", TEST01)):
        write(d / name, text, crlf=True)  # the official files use CRLF
    assert ucf101_labels(tmp_path) == UCF_ROWS
    assert ucf101_labels(d, split=1) == UCF_ROWS
    with pytest.raises(FileNotFoundError, match="trainlist02.txt"):
        ucf101_labels(tmp_path, split=2)
    with pytest.raises(ValueError, match="^split: .*got 4"):
        ucf101_labels(tmp_path, split=4)


def test_ucf101_labels_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="classInd.txt"):
        ucf101_labels(tmp_path)
    write(tmp_path / "classInd.txt", CLASS_IND)
    write(tmp_path / "testlist01.txt", TEST01)
    write(tmp_path / "trainlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 2\n")
    with pytest.raises(ValueError, match=r"trainlist01\.txt:1: class index 2"):
        ucf101_labels(tmp_path)
    write(tmp_path / "trainlist01.txt", "Unknown/v_Unknown_g08_c01.avi 1\n")
    with pytest.raises(ValueError, match=r"trainlist01\.txt:1:.*classInd"):
        ucf101_labels(tmp_path)


def test_ucf101_labels_of_the_synthetic_splits_equal_its_labels_csv(tmp_path):
    out = make_synthetic(tmp_path / "synth", SynthConfig(videos=6, classes=3, size=16, seconds=0.5, fps=8))
    expected = set(read_labels_csv(out / "labels.csv"))
    assert set(ucf101_labels(out / "splits")) == expected
    assert set(ucf101_labels(out)) == expected  # finds splits/ itself
    assert len(expected) == 6


# ---------------------------------------------------------------- HMDB51


def hmdb_root(tmp_path: Path) -> Path:
    d = tmp_path / "testTrainMulti_7030_splits"
    # official lines end with a space; 0 = unused in this split
    brush = "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 \nBlonde_brush_hair_f_nm_np1_ba_goo_0.avi 2 \nx_0.avi 0 \n"
    write(d / "brush_hair_test_split1.txt", brush, crlf=True)
    write(d / "cartwheel_test_split1.txt", "Bodenturnen_cartwheel_f_cm_np1_le_med_0.avi 2 \n")
    write(d / "brush_hair_test_split2.txt", "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 2 \n")
    return tmp_path


def test_hmdb51_labels_from_official_split_files(tmp_path):
    root = hmdb_root(tmp_path)
    assert hmdb51_labels(root) == [
        LabelRow("brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0", "brush_hair", "train"),
        LabelRow("brush_hair/Blonde_brush_hair_f_nm_np1_ba_goo_0", "brush_hair", "test"),
        LabelRow("cartwheel/Bodenturnen_cartwheel_f_cm_np1_le_med_0", "cartwheel", "test"),
    ]
    assert hmdb51_labels(root / "testTrainMulti_7030_splits", split=2) == [
        LabelRow("brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0", "brush_hair", "test"),
    ]


def test_hmdb51_labels_errors(tmp_path):
    root = hmdb_root(tmp_path)
    with pytest.raises(FileNotFoundError, match="_test_split3.txt"):
        hmdb51_labels(root, split=3)
    with pytest.raises(ValueError, match="^split: "):
        hmdb51_labels(root, split=0)
    with pytest.raises(FileNotFoundError, match="missing"):
        hmdb51_labels(tmp_path / "missing")
    write(root / "testTrainMulti_7030_splits" / "cartwheel_test_split1.txt", "a.avi 1\nb.avi 3\n")
    with pytest.raises(ValueError, match=r"cartwheel_test_split1\.txt:2:"):
        hmdb51_labels(root)


# ---------------------------------------------------------------- ESC-50

ESC50_CSV = """filename,fold,target,category,esc10,src_file,take
1-100032-A-0.wav,1,0,dog,True,100032,A
1-100038-A-14.wav,1,14,chirping_birds,False,100038,A
2-100648-A-43.wav,2,43,chirping_birds,False,100648,A
5-9032-A-0.wav,5,0,dog,True,9032,A
"""


def test_esc50_labels_fold_is_the_test_split(tmp_path):
    write(tmp_path / "meta" / "esc50.csv", ESC50_CSV)
    assert esc50_labels(tmp_path) == [
        LabelRow("audio/1-100032-A-0", "dog", "test"),
        LabelRow("audio/1-100038-A-14", "chirping_birds", "test"),
        LabelRow("audio/2-100648-A-43", "chirping_birds", "train"),
        LabelRow("audio/5-9032-A-0", "dog", "train"),
    ]
    assert [r.split for r in esc50_labels(tmp_path, fold=5)] == ["train", "train", "train", "test"]


def test_esc50_labels_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"meta/esc50\.csv"):
        esc50_labels(tmp_path)
    with pytest.raises(ValueError, match="^fold: .*got 6"):
        esc50_labels(tmp_path, fold=6)
    write(tmp_path / "meta" / "esc50.csv", ESC50_CSV + "6-1-A-0.wav,6,0,dog,True,1,A\n")
    with pytest.raises(ValueError, match=r"esc50\.csv:6:"):
        esc50_labels(tmp_path)
    write(tmp_path / "meta" / "esc50.csv", "filename,target\n1-1-A-0.wav,0\n")
    with pytest.raises(ValueError, match=r"esc50\.csv:1: missing columns \['category', 'fold'\]"):
        esc50_labels(tmp_path)


# ---------------------------------------------------------------- hostile ids (issue 26)

HOSTILE_NAMES = ["new\nline", "carriage\rreturn", "crlf\r\nend", "line\u2028sep", "next\x85line", " lead", "trail ", " ",
                 "caf\u00e9", "cafe\u0301", 'quote"d', "comma,d", "tab\there", "back\\slash", "bom\ufeffin", "para\u2029sep"]


def test_labels_csv_round_trips_every_id_prepare_makes(tmp_path):
    """Real files named as an adversary would: the ids prepare lists for them survive
    write_labels_csv → read_labels_csv unchanged (NFC and NFD spellings stay two ids)."""
    from raysup.data.prepare import list_inputs

    src = tmp_path / "src"
    (src / "sub dir").mkdir(parents=True)
    for name in HOSTILE_NAMES:
        (src / f"{name}.mp4").write_bytes(b"x")
    (src / "sub dir" / "x\ny.mp4").write_bytes(b"x")
    ids = list_inputs(str(src), audio_only=False)[0]["video_id"].to_pylist()
    assert sorted(ids) == sorted(HOSTILE_NAMES + ["sub dir/x\ny"])
    rows = [LabelRow(video_id, f"class {i % 3}", "train" if i % 2 else "test") for i, video_id in enumerate(ids)]
    write_labels_csv(rows, tmp_path / "labels.csv")
    assert read_labels_csv(tmp_path / "labels.csv") == rows


def test_ids_that_print_alike_are_told_apart_in_errors(tmp_path):
    path = tmp_path / "l.csv"
    write_labels_csv([LabelRow("caf\u00e9", "A", "train"), LabelRow("cafe\u0301", "A", "train"), LabelRow("a\u2028", "A", "test")], path)
    assert len(read_labels_csv(path)) == 3
    path.write_text(path.read_text(encoding="utf-8") + "cafe\u0301,B,test\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"l\.csv:5: video_id 'cafe\\u0301' already on line 3"):
        read_labels_csv(path)
    assert show_id("caf\u00e9") == "'caf\u00e9'" and show_id(" a\u2028") == "' a\\u2028'"
