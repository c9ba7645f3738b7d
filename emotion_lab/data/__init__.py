# Kept light on purpose: emotion_lab.inference.predictor imports the labels without pulling in Lightning.
from emotion_lab.data.labels import ID2LABEL, LABEL2ID, LABELS, NUM_CLASSES

__all__ = ["ID2LABEL", "LABEL2ID", "LABELS", "NUM_CLASSES"]
