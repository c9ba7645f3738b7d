"""Lightning callbacks that write what a researcher reads after a run."""

from emotion_lab.callbacks.extra_eval import ExtraEvaluation
from emotion_lab.callbacks.figures import ConfusionMatrixFigure, RunFigures
from emotion_lab.callbacks.reports import TestReport

__all__ = ["ConfusionMatrixFigure", "ExtraEvaluation", "RunFigures", "TestReport"]
