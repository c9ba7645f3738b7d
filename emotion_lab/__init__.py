"""emotion_lab: emotion recognition in English text with Lightning and Hydra."""

import os

# Every entry point imports this first: tokenizers' thread pool deadlocks in forked DataLoader workers.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from emotion_lab.labels import ID2LABEL, LABEL2ID, LABELS  # noqa: E402

__all__ = ["ID2LABEL", "LABEL2ID", "LABELS"]
