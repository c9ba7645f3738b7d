"""`data.noise`: label-keeping noise on training sentences, drawn anew each epoch.

Each epoch, a share `p` of the training sentences is drawn for one perturbation from `kinds`
(emotion_lab/robustness/perturb.py: typos, case, punctuation, mentions, links, hashtags, emoji,
contractions, first names; one with nothing for it to change stays as it is; a typo never spells a word
of the tokenizer's vocabulary), with a generator seeded by (seed, epoch, sentence): the same epoch sees the
same noise in a run that got there straight and in one resumed from a checkpoint, and each epoch sees
other noise. Validation and test sentences are never changed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from emotion_lab.errors import ConfigError
from emotion_lab.robustness.perturb import Known, perturbation, seeded, vocabulary_words

DEFAULT_KINDS = ("typo", "sentence_case", "punctuation", "mention", "url", "hashtag", "emoji", "contraction")


class TextNoise:
    def __init__(self, enabled: bool = False, p: float = 0.5, kinds: Sequence[str] = DEFAULT_KINDS, seed: int = 42):
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"data.noise.p={p}: must lie in [0, 1]")
        if not kinds:
            raise ConfigError("data.noise.kinds is empty: name at least one perturbation")
        try:
            self.perturbations = [perturbation(name) for name in kinds]
        except ConfigError as err:
            raise ConfigError(f"data.noise.kinds: {err}") from None
        self.enabled, self.p, self.kinds, self.seed = enabled, p, list(kinds), seed

    def __call__(self, text: str, epoch: int, index: int, known: Known = ()) -> str:
        """Sentence `index` of the training split as epoch `epoch` sees it; a typo never spells a word of `known`.
        A sentence the drawn perturbation cannot change (no word long enough, no contraction) stays as it is."""
        rng = seeded(self.seed, "noise", epoch, index)
        if rng.random() >= self.p:
            return text
        return self.perturbations[rng.randrange(len(self.perturbations))](text, rng, known)


class NoisyTrainSet(torch.utils.data.Dataset):
    """The training split, each sentence passed through `noise` for the epoch its key names and tokenized
    then. Keys are (epoch, index) pairs (`WithEpoch` yields them), so loader workers need no shared state."""

    def __init__(self, rows, noise: TextNoise, tokenizer, max_length: int) -> None:
        self.texts, self.labels = list(rows["text"]), list(rows["label"])
        self.teacher = rows["teacher_logits"] if "teacher_logits" in rows.column_names else None
        self.noise, self.tokenizer, self.max_length = noise, tokenizer, max_length
        self.known = vocabulary_words(tokenizer)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        text = self.noise(self.texts[index], epoch, index, self.known)
        encoded = self.tokenizer(text, truncation=True, max_length=self.max_length)
        item = {name: torch.tensor(encoded[name]) for name in ("input_ids", "attention_mask")}
        item["label"] = torch.tensor(self.labels[index])
        if self.teacher is not None:
            item["teacher_logits"] = torch.tensor(self.teacher[index], dtype=torch.float32)
        return item


class WithEpoch(torch.utils.data.Sampler):
    """(epoch, index) for each index an epoch-aware sampler (`EpochSeeded`) yields."""

    def __init__(self, sampler) -> None:
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:  # Lightning calls it on the loader's sampler
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        epoch = self.sampler.epoch
        return ((epoch, index) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)
