"""emotion_lab: emotion recognition in English text with Lightning and Hydra."""

from emotion_lab.data.labels import ID2LABEL, LABEL2ID, LABELS

__all__ = ["ID2LABEL", "LABEL2ID", "LABELS"]
