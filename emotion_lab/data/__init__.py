from emotion_lab.data.datamodule import EmotionDataModule
from emotion_lab.data.labels import ID2LABEL, LABEL2ID, LABELS, NUM_CLASSES

__all__ = ["ID2LABEL", "LABEL2ID", "LABELS", "NUM_CLASSES", "EmotionDataModule"]
