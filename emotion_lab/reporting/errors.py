"""Errors worth reading: the most confident mistakes per true class, and the confusions that cost the most F1."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from emotion_lab.labels import LABELS
from emotion_lab.utils.atomic import atomic_open

ERROR_COLUMNS = ("text", "true", "predicted", "probability")


def confident_mistakes(
    texts: Sequence[str], targets: np.ndarray, probs: np.ndarray, per_class: int = 10
) -> list[dict[str, object]]:
    """Up to `per_class` mistakes for each true class, most confident first, then by class order."""
    predicted, confidence = probs.argmax(1), probs.max(1)
    rows = []
    for label_id, label in enumerate(LABELS):
        wrong = np.flatnonzero((targets == label_id) & (predicted != label_id))
        for i in wrong[np.argsort(-confidence[wrong], kind="stable")][:per_class]:
            rows.append(
                {
                    "text": texts[i],
                    "true": label,
                    "predicted": LABELS[predicted[i]],
                    "probability": float(confidence[i]),
                }
            )
    return rows


def costly_confusions(
    texts: Sequence[str], targets: np.ndarray, predicted: np.ndarray, top: int = 5, examples: int = 3
) -> list[dict[str, object]]:
    """The (true, predicted) pairs whose mistakes cost the most weighted F1: how much the score would
    rise if exactly those sentences were predicted right, with a few of them."""
    base = f1_score(targets, predicted, average="weighted", labels=range(len(LABELS)), zero_division=0)
    pairs = []
    for true_id in range(len(LABELS)):
        for pred_id in range(len(LABELS)):
            which = np.flatnonzero((targets == true_id) & (predicted == pred_id))
            if true_id == pred_id or not len(which):
                continue
            fixed = predicted.copy()
            fixed[which] = true_id
            gain = f1_score(targets, fixed, average="weighted", labels=range(len(LABELS)), zero_division=0) - base
            pairs.append(
                {
                    "true": LABELS[true_id],
                    "predicted": LABELS[pred_id],
                    "count": len(which),
                    "f1_weighted_cost": float(gain),
                    "examples": [texts[i] for i in which[:examples]],
                }
            )
    return sorted(pairs, key=lambda pair: -pair["f1_weighted_cost"])[:top]


def write_errors_csv(rows: list[dict[str, object]], path: Path) -> Path:
    with atomic_open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=ERROR_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def confusion_lines(pairs: list[dict[str, object]]) -> str:
    """The costly confusions as text for the test report."""
    lines = ["confusions that cost the most weighted F1 (true -> predicted: sentences, F1 if they were right):"]
    for pair in pairs:
        lines.append(
            f"  {pair['true']} -> {pair['predicted']}: {pair['count']}, +{pair['f1_weighted_cost']:.4f}"
            + "".join(f"\n      {text!r}" for text in pair["examples"])
        )
    return "\n".join(lines) + "\n"
