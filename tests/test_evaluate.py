"""Which labelled videos a probe uses: rows of videos that were not prepared are counted, a
split left empty is an error that says so."""
from __future__ import annotations

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
