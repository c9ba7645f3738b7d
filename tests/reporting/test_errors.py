"""Confident mistakes and costly confusions on cases small enough to check by hand."""

import csv

import numpy as np
import pytest
from sklearn.metrics import f1_score

from emotion_lab.reporting.errors import (
    ERROR_COLUMNS,
    confident_mistakes,
    confusion_lines,
    costly_confusions,
    write_errors_csv,
)

# sadness=0, joy=1, love=2: two joy sentences read as love with different confidence, one sadness as joy.
TEXTS = ["a", "b", "c", "d", "e", "f"]
TARGETS = np.array([1, 1, 1, 0, 0, 2])
PROBS = np.array(
    [
        [0.0, 0.4, 0.6, 0, 0, 0],  # joy -> love at 0.6
        [0.0, 0.1, 0.9, 0, 0, 0],  # joy -> love at 0.9
        [0.0, 0.8, 0.2, 0, 0, 0],  # right
        [0.3, 0.7, 0.0, 0, 0, 0],  # sadness -> joy at 0.7
        [0.9, 0.1, 0.0, 0, 0, 0],  # right
        [0.0, 0.0, 1.0, 0, 0, 0],  # right
    ]
)


def test_confident_mistakes_per_true_class_most_confident_first(tmp_path):
    rows = confident_mistakes(TEXTS, TARGETS, PROBS)
    assert [(r["text"], r["true"], r["predicted"]) for r in rows] == [
        ("d", "sadness", "joy"),
        ("b", "joy", "love"),
        ("a", "joy", "love"),
    ]
    assert [r["probability"] for r in rows] == pytest.approx([0.7, 0.9, 0.6])
    assert len(confident_mistakes(TEXTS, TARGETS, PROBS, per_class=1)) == 2
    path = write_errors_csv(rows, tmp_path / "errors.csv")
    with path.open() as file:
        written = list(csv.DictReader(file))
    assert tuple(written[0]) == ERROR_COLUMNS and written[1]["text"] == "b"


def test_costly_confusions_rank_pairs_by_the_f1_their_fix_would_gain():
    predicted = PROBS.argmax(1)
    pairs = costly_confusions(TEXTS, TARGETS, predicted)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("joy", "love", 2), ("sadness", "joy", 1)]
    fixed = predicted.copy()
    fixed[[0, 1]] = 1
    expected = f1_score(TARGETS, fixed, average="weighted") - f1_score(TARGETS, predicted, average="weighted")
    assert pairs[0]["f1_weighted_cost"] == pytest.approx(expected) and expected > pairs[1]["f1_weighted_cost"] > 0
    assert pairs[0]["examples"] == ["a", "b"]
    text = confusion_lines(pairs)
    assert "joy -> love: 2, +" in text and "'a'" in text
