"""The dair-ai/emotion LightningDataModule: load, (augment), (read through the spelling step), tokenize, batch
with dynamic padding."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
import torch
from datasets import DatasetDict
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding
from transformers.trainer_pt_utils import LengthGroupedSampler

from emotion_lab.data.feature_cache import CachedSplit, FeatureCache, collate_states
from emotion_lab.data.noise import NoisyTrainSet, WithEpoch
from emotion_lab.data.sources import load_splits, read_labelled_file
from emotion_lab.data.teacher_logits import TeacherLogits
from emotion_lab.encoders.loading import load_tokenizer
from emotion_lab.errors import ConfigError
from emotion_lab.labels import LABELS
from emotion_lab.robustness.spelling import SPELLING_KEY, WordRecognizer, training_words

log = logging.getLogger(__name__)


class EpochSeeded(torch.utils.data.Sampler):
    """A shuffling sampler whose order depends on the seed and the epoch only, not on the process.

    Lightning calls `set_epoch(e)` before each training epoch; the generator is re-seeded and the
    e earlier epochs' draws are replayed (cheap: a permutation each). So epoch e has the same order
    in a run that got there straight and in one resumed from a checkpoint, and it is the order one
    continuously advancing generator would give. `resume_at(e, position)` makes the next pass over
    epoch e start at `position` of that order: a run resumed mid-epoch sees the rest of it.
    """

    def __init__(self, sampler: torch.utils.data.Sampler, generator: torch.Generator, seed: int) -> None:
        self.sampler, self.generator, self.seed = sampler, generator, seed
        self._resume: tuple[int, int] | None = None
        self.begun = False  # has a pass over the current epoch started?
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.begun = epoch, False
        self.generator.manual_seed(self.seed)
        for _ in range(epoch):
            for _ in self.sampler:
                pass

    def resume_at(self, epoch: int, position: int) -> None:
        self._resume = (epoch, position)

    def __iter__(self):
        resume, self._resume, self.begun = self._resume, None, True
        start = resume[1] if resume is not None and resume[0] == self.epoch else 0
        return itertools.islice(self.sampler, start, None)

    def __len__(self) -> int:
        return len(self.sampler)


class EmotionDataModule(L.LightningDataModule):
    """Train / validation / test splits of dair-ai/emotion, tokenized for one encoder (an `EmotionData`).

    Batches are padded per batch to their longest sentence (most sentences are far shorter than
    `max_length`, so padding to it would waste most of every matmul). With `group_by_length`, training
    batches are drawn from length-sorted mega-batches (randomly, a new order each epoch); evaluation
    always runs length-sorted. Both cut padding further.
    """

    def __init__(
        self,
        tokenizer_name: str,
        dir: str | None = None,
        fallback_dirs: Sequence[str] = (),
        hub_id: str = "dair-ai/emotion",
        on_bad_line: str = "error",
        max_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        group_by_length: bool = True,
        num_workers: int = 0,
        limit_per_split: int | None = None,
        augment=None,
        noise=None,
        spelling: bool = False,
        feature_cache: dict | None = None,
        teacher_logits: str | None = None,
        extra_eval: Mapping[str, str] | None = None,
        seed: int = 42,
    ) -> None:
        super().__init__()
        if max_length < 8:
            raise ConfigError(f"data.max_length={max_length}: must be at least 8 word-pieces")
        if batch_size < 1 or eval_batch_size < 1:
            raise ConfigError(f"data.batch_size={batch_size}, data.eval_batch_size={eval_batch_size}: must be >= 1")
        # Plain types only: checkpoints must load with torch.load(weights_only=True).
        fallback_dirs = [str(d) for d in fallback_dirs]
        extra_eval = {str(name): str(path) for name, path in (extra_eval or {}).items()}
        feature_cache = dict(feature_cache or {})
        self.save_hyperparameters(ignore=["augment", "noise"], logger=False)
        self.augmenter = augment if augment is not None and augment.enabled else None
        self.noise = noise if noise is not None and noise.enabled else None
        if self.noise is not None and feature_cache.get("enabled"):
            raise ConfigError(
                "data.noise.enabled=true with data.feature_cache.enabled=true: cached states are those of the "
                "sentences as written, so noise would never reach the network; turn one of them off"
            )
        if teacher_logits and (self.augmenter is not None or feature_cache.get("enabled")):
            raise ConfigError(
                "data.teacher_logits with data.augment.enabled=true or data.feature_cache.enabled=true: "
                "augmented copies and cached states carry no teacher logits; turn those off to distil"
            )
        self.tokenizer = None
        self.spelling: WordRecognizer | None = None
        self._spelling_words: dict[str, int] | None = None  # a trained model's dictionary (`use_spelling`)
        self.datasets: DatasetDict | None = None
        self.cached: dict[str, CachedSplit] | None = None
        self.source: str | None = None
        self.extra: dict = {}  # evaluation-only sets, tokenized: name -> (dataset, lengths)
        self._train_sampler: EpochSeeded | None = None
        self._resume: dict[str, int] | None = None  # from a checkpoint: where the next training epoch starts

    def prepare_data(self) -> None:
        # Fail before any training if augmentation needs WordNet and it is missing.
        if self.augmenter is not None:
            self.augmenter.check_ready()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets is not None:
            return
        hp = self.hparams
        splits, self.source = load_splits(hp.dir, hp.fallback_dirs, hp.hub_id, hp.on_bad_line, hp.limit_per_split)
        # Tokenize here, before loaders fork, so the fast tokenizer's thread pool is never forked.
        self.tokenizer = load_tokenizer(hp.tokenizer_name)
        if hp.spelling or self._spelling_words is not None:
            words = self._spelling_words
            self.spelling = self._spelling(words if words is not None else training_words(splits["train"]["text"]))
            # Training sentences are its dictionary; what the model is asked about is read through it.
            for split in ("validation", "test"):
                read = list(map(self.spelling, splits[split]["text"]))
                splits[split] = splits[split].remove_columns("text").add_column("text", read)
        if self.augmenter is not None:
            splits["train"] = self.augmenter.augment_dataset(splits["train"])
        if hp.teacher_logits:
            train = splits["train"]
            teacher = TeacherLogits.load(hp.teacher_logits).for_split(
                "train", train["text"], train["label"], hp.teacher_logits
            )
            splits["train"] = train.add_column("teacher_logits", teacher.tolist())
        log.info("data from %s: %s", self.source, {k: len(v) for k, v in splits.items()})
        for example in splits["train"].select(range(min(3, len(splits["train"])))):
            log.info("train example: %r -> %s", example["text"], LABELS[example["label"]])
        self.datasets = splits.map(
            lambda batch: self.tokenizer(batch["text"], truncation=True, max_length=hp.max_length),
            batched=True,
            desc="tokenize",
        )
        self.lengths = {split: [len(ids) for ids in data["input_ids"]] for split, data in self.datasets.items()}
        for data in self.datasets.values():
            extra = ["teacher_logits"] if "teacher_logits" in data.column_names else []
            data.set_format("torch", columns=["input_ids", "attention_mask", "label", *extra])
        self.collator = DataCollatorWithPadding(self.tokenizer, return_tensors="pt")
        self.extra = {name: self._read_extra(name, path) for name, path in hp.extra_eval.items()}
        if self.noise is not None:
            # Training sentences are tokenized as each epoch's noise leaves them; length groups stay those
            # of the sentences as written (noise moves a length by a few word-pieces at most).
            self.noisy_train = NoisyTrainSet(self.datasets["train"].with_format(None), self.noise, self.tokenizer,
                                             hp.max_length)  # fmt: skip
            log.info("noisy train example: %r", self.noise(splits["train"][0]["text"], 0, 0, self.noisy_train.known))
        if self.feature_cache_layer is not None:
            cache = FeatureCache(hp.feature_cache["dir"], hp.tokenizer_name, self.feature_cache_layer, hp.max_length)
            plain = self.datasets.with_format(None)
            self.cached = {
                split: cache.get(split, list(data["input_ids"]), list(data["label"])) for split, data in plain.items()
            }

    def use_spelling(self, counts: Mapping[str, int]) -> None:
        """Read evaluation sentences through a trained model's spelling step (its training words and counts)
        instead of one built from this training split; call before `setup` (evaluate does)."""
        if self.datasets is not None:
            raise RuntimeError("use_spelling after setup: the sentences were already read")
        self._spelling_words = dict(counts)

    def _spelling(self, counts: Mapping[str, int]) -> WordRecognizer:
        spelling = WordRecognizer.for_tokenizer(counts, self.tokenizer)
        log.info("spelling: %d training words; e.g. %r", len(spelling.counts), spelling("i feel scaerd and lnoely"))
        return spelling

    def _read_extra(self, name: str, path: str):
        file = Path(path).expanduser()
        rows = read_labelled_file(file, f"data.extra_eval.{name}={path!r}", self.hparams.on_bad_line)
        texts = list(map(self.spelling, rows.texts)) if self.spelling is not None else rows.texts
        encoded = self.tokenizer(texts, truncation=True, max_length=self.hparams.max_length)
        items = [
            {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask), "label": torch.tensor(label)}
            for ids, mask, label in zip(encoded["input_ids"], encoded["attention_mask"], rows.labels)
        ]
        log.info("evaluation-only set %s: %d sentences from %s", name, len(items), file)
        return items

    def extra_eval_dataloaders(self) -> dict[str, DataLoader]:
        """The evaluation-only sets of `data.extra_eval` (never trained on, never cached): name -> a loader of
        token ids, length-sorted, in batches of `eval_batch_size`."""
        loaders = {}
        for name, items in self.extra.items():
            order = sorted(range(len(items)), key=lambda i: len(items[i]["input_ids"]))
            loaders[name] = DataLoader(
                items, batch_size=self.hparams.eval_batch_size, sampler=order, collate_fn=self._collate
            )
        return loaders

    @property
    def max_length(self) -> int:
        return self.hparams.max_length

    @property
    def teacher_logits_file(self) -> str | None:
        """Training batches carry `teacher_logits` (sentences x teachers x classes) for a distillation loss."""
        return self.hparams.teacher_logits or None

    @property
    def feature_cache_layer(self) -> int | None:
        """Batches carry this encoder layer's cached states (`hidden`) instead of token ids (-1: the last)."""
        cache = self.hparams.feature_cache
        return cache.get("layer", -1) if cache.get("enabled") else None

    def _collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.collator([{k: f[k] for k in ("input_ids", "attention_mask")} for f in features])
        batch["labels"] = torch.stack([f["label"] for f in features])
        if "teacher_logits" in features[0]:
            batch["teacher_logits"] = torch.stack([f["teacher_logits"] for f in features])
        return batch

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        data, lengths, collate = self.datasets[split], self.lengths[split], self._collate
        if self.cached is not None:
            data, collate = self.cached[split], collate_states
        batch_size = self.hparams.batch_size if shuffle else self.hparams.eval_batch_size
        if shuffle:
            generator = torch.Generator()
            if self.hparams.group_by_length:
                inner = LengthGroupedSampler(batch_size, lengths=lengths, generator=generator)
            else:
                inner = torch.utils.data.RandomSampler(data, generator=generator)
            sampler = EpochSeeded(inner, generator, self.hparams.seed)
            if self._resume is not None:
                sampler.resume_at(self._resume["epoch"], self._resume["batches"] * batch_size)
            self._train_sampler = sampler
            if self.noise is not None:
                data, sampler = self.noisy_train, WithEpoch(sampler)
        else:
            sampler = self.eval_order(split)
        return DataLoader(
            data,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=collate,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def state_dict(self) -> dict:
        """Where training is in its epoch: the epoch and how many of its batches the trainer completed (its
        count, not the batches handed out, so a batch Ctrl-C cut short runs again, as Lightning's loop
        expects). Lightning saves it in each checkpoint and loads it back before the loaders are built;
        a loader's own state would come back too late, after `configure_optimizers` built the loader.
        With `spelling`, the checkpoint also carries the spelling dictionary (`SPELLING_KEY`), so a model
        exported or loaded from it reads text as this run did."""
        state = {SPELLING_KEY: dict(self.spelling.counts)} if self.spelling is not None else {}
        sampler = self._train_sampler
        if self.trainer is None or sampler is None:
            return state
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.completed if sampler.begun else 0
        return {**state, "epoch": sampler.epoch, "batches": done}

    def load_state_dict(self, state: dict) -> None:
        self._resume = {k: state[k] for k in ("epoch", "batches") if k in state} or None

    def eval_order(self, split: str) -> list[int]:
        """The order a validation or test loader visits `split` in: by length. Order does not change
        evaluation metrics, and sorted batches carry almost no padding."""
        return sorted(range(len(self.lengths[split])), key=self.lengths[split].__getitem__)

    def eval_examples(self, split: str) -> list[tuple[str, int]]:
        """(sentence, label id) of `split` in the order its evaluation loader yields them."""
        data = self.datasets[split].with_format(None)
        texts, labels = data["text"], data["label"]
        return [(texts[i], labels[i]) for i in self.eval_order(split)]

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def label_counts(self, split: str) -> list[int]:
        """Count per label id in `split` (train after augmentation, if any)."""
        labels = torch.as_tensor(self.datasets[split].with_format(None)["label"])
        return torch.bincount(labels, minlength=len(LABELS)).tolist()

    @property
    def split_counts(self) -> dict[str, list[int]]:
        return {split: self.label_counts(split) for split in self.datasets}

    @property
    def class_counts(self) -> list[int]:
        """Training-split count per label id (for inverse-frequency loss weights)."""
        return self.label_counts("train")
