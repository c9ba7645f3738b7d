"""What emotion_lab's LightningModule, callbacks and training command read from a DataModule.

A DataModule of your own (for the same six labels) provides these besides Lightning's loaders; it
need not subclass anything. `check_datamodule` runs when training starts and names what is missing in
one line. docs/extending.md shows a complete one.
"""

from __future__ import annotations

from typing import Any, Protocol

from emotion_lab.errors import ConfigError


class EmotionData(Protocol):
    """Attributes and methods, and what each must hold (after `setup` where noted)."""

    # Attributes from __init__ on, None until setup.
    source: str | None  # where the data came from (metrics.json, the model card)
    tokenizer: Any  # the encoder's fast tokenizer (the attention figure tokenizes with it)

    @property
    def max_length(self) -> int: ...  # word-pieces per sentence after truncation

    @property
    def feature_cache_layer(self) -> int | None: ...  # batches carry cached states of this layer (-1: last), or None

    @property
    def teacher_logits_file(self) -> str | None: ...  # training batches carry `teacher_logits` from this file, or None

    @property
    def class_counts(self) -> list[int]: ...  # training split, per label id, once set up

    @property
    def split_counts(self) -> dict[str, list[int]]: ...  # every split, per label id, once set up

    def eval_examples(self, split: str) -> list[tuple[str, int]]: ...  # (sentence, label) in the loader's order

    # Evaluation-only sets scored after the test (name -> loader of `input_ids`, `attention_mask`, `labels`);
    # an empty dict when there are none.
    def extra_eval_dataloaders(self) -> dict[str, Any]: ...


CONTRACT = (
    "source",
    "tokenizer",
    "max_length",
    "feature_cache_layer",
    "teacher_logits_file",
    "class_counts",
    "split_counts",
    "eval_examples",
    "extra_eval_dataloaders",
)


def missing_members(datamodule: Any) -> list[str]:
    """The members of `EmotionData` that `datamodule` lacks (properties are looked up, never evaluated)."""
    cls = type(datamodule)
    return [name for name in CONTRACT if not hasattr(cls, name) and name not in vars(datamodule)]


def check_datamodule(datamodule: Any) -> None:
    """One ConfigError line naming what `datamodule` lacks, before anything trains."""
    missing = missing_members(datamodule)
    if missing:
        cls = type(datamodule)
        raise ConfigError(
            f"data: {cls.__module__}.{cls.__qualname__} lacks {', '.join(missing)}, which emotion_lab reads from a "
            "DataModule (emotion_lab/data/contract.py; an example: docs/extending.md)"
        )
