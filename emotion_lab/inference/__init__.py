"""Inference without Hydra, Lightning or training data."""

from emotion_lab.inference.predictor import EmotionPredictor, Prediction

__all__ = ["EmotionPredictor", "Prediction"]
