"""Which labelled videos a probe uses: rows of videos that were not prepared are counted, a
split left empty is an error that says so."""
from __future__ import annotations

import numpy as np
import pytest

from raysup.config import ConfigError
from raysup.data.labels import LabelRow
from raysup.evaluate import labelled

ROWS = [LabelRow("a/1", "a", "train"), LabelRow("b/1", "b", "train"), LabelRow("a/2", "a", "test"), LabelRow("zz/9", "b", "test")]


def test_rows_of_unprepared_videos_are_counted(capsys):
    assert labelled(ROWS, {"a/1", "b/1", "a/2"}) == {"a/1": "train", "b/1": "train", "a/2": "test"}
    assert "labels: 1 of 4 rows name videos that are not in the prepared data" in capsys.readouterr().err
    labelled(ROWS[:3], {"a/1", "b/1", "a/2"})
    assert capsys.readouterr().err == ""


def test_a_split_without_prepared_videos_is_an_error():
    with pytest.raises(ConfigError, match="labels: none of the 2 test videos of the labels CSV is in the prepared data"):
        labelled(ROWS, {"a/1", "b/1"})
    assert labelled(ROWS, {"a/1"}, splits=()) == {"a/1": "train"}  # cross-validation needs no split


def test_cross_validation_errors_name_folds_and_labels():
    """scikit-learn's refusal (here: the fold that tests the only recording of class 1 trains on
    class 0 alone) is one line naming ``--folds`` and the labels, not scikit-learn's alone."""
    from raysup.evaluate import fold_accuracies

    x = np.random.default_rng(0).normal(size=(8, 4))
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    groups = ["g1", "g2", "g3", "g4", "g5", "g6", "g7", "g7"]  # both class-1 videos: one recording
    with pytest.raises(ConfigError, match=r"--folds 4: cross-validation of the labels in labels.csv failed \(.*class"):
        fold_accuracies({"video": x}, y, groups, 4, 0, "labels.csv")
