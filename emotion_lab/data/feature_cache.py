"""A disk cache of frozen-encoder token states, so that a sweep trial trains only the head.

Each split is encoded once and stored ragged (no padding) in fp16: `states` (total tokens x width),
`offsets` (sentence i is states[offsets[i]:offsets[i+1]]) and `labels`, in one safetensors file
per split. The cache key covers everything that changes the states: cache format version,
encoder name and resolved location, layer, max length and a hash of the split's token ids and
labels (so augmentation settings and data edits are covered too). A stale, unreadable or
half-written cache is never used: entries are written to a temporary folder and renamed into
place, and a key or format mismatch means a rebuild.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from emotion_lab.encoders.loading import load_encoder, resolve_encoder, run_layers
from emotion_lab.errors import ConfigError

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


@dataclass
class CachedSplit(Dataset):
    """One split's cached states; items are (states of one sentence, label)."""

    states: torch.Tensor
    offsets: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.states[self.offsets[index] : self.offsets[index + 1]], self.labels[index]

    @property
    def lengths(self) -> list[int]:
        return (self.offsets[1:] - self.offsets[:-1]).tolist()


def collate_states(items: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pad a batch of ragged fp16 states to its longest sentence, as float32, with a mask."""
    lengths = [len(states) for states, _ in items]
    hidden = torch.zeros(len(items), max(lengths), items[0][0].shape[-1])
    mask = torch.zeros(len(items), max(lengths), dtype=torch.long)
    for row, (states, _) in enumerate(items):
        hidden[row, : len(states)] = states.float()
        mask[row, : len(states)] = 1
    return {"hidden": hidden, "attention_mask": mask, "labels": torch.stack([label for _, label in items])}


def split_fingerprint(input_ids: list[list[int]], labels: list[int]) -> str:
    digest = hashlib.sha256()
    for ids, label in zip(input_ids, labels):
        digest.update(json.dumps([ids, int(label)]).encode())
    return digest.hexdigest()


class FeatureCache:
    """Builds or loads cached encoder states for tokenized splits.

    `layer=-1` caches the last layer (mode a: the whole encoder frozen, the head trains on top).
    A lower layer (e.g. 4 of 6) stores that layer's output, for heads that continue the encoder
    from there.
    """

    def __init__(self, dir: str, encoder_name: str, layer: int = -1, max_length: int = 128, batch_size: int = 128):
        self.root = Path(dir)
        self.encoder_name = encoder_name
        self.layer = layer
        self.max_length = max_length
        self.batch_size = batch_size
        self._encoder = None

    def key(self, fingerprint: str) -> str:
        fields = {
            "format": CACHE_FORMAT,
            "encoder": self.encoder_name,
            "resolved": str(resolve_encoder(self.encoder_name)),
            "layer": self.layer,
            "max_length": self.max_length,
            "data": fingerprint,
        }
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]

    def get(self, split: str, input_ids: list[list[int]], labels: list[int]) -> CachedSplit:
        key = self.key(split_fingerprint(input_ids, labels))
        folder = self.root / f"{split}-{key}"
        cached = self._load(folder, key)
        if cached is not None:
            log.info("feature cache hit: %s", folder)
            return cached
        log.info("feature cache miss: encoding %d %s sentences into %s", len(labels), split, folder)
        self._build(folder, key, input_ids, labels)
        return self._load(folder, key)

    def _load(self, folder: Path, key: str) -> CachedSplit | None:
        if not folder.is_dir():
            return None
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
                raise ValueError(f"format {meta.get('format')}, key {meta.get('key')}")
            tensors = load_file(folder / "states.safetensors")
            return CachedSplit(tensors["states"], tensors["offsets"], tensors["labels"])
        except Exception as err:  # unreadable, truncated or foreign: never trusted
            log.warning("feature cache %s unusable (%s): rebuilding", folder, err)
            shutil.rmtree(folder, ignore_errors=True)
            return None

    @torch.inference_mode()
    def encode(self, input_ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Ragged fp16 states of every sentence at `self.layer`, in input order."""
        if self._encoder is None:
            self._encoder = load_encoder(self.encoder_name).eval()
            layers = self._encoder.config.num_hidden_layers
            if not (-1 <= self.layer <= layers) or self.layer == 0:
                raise ConfigError(
                    f"data.feature_cache.layer={self.layer}: allowed -1 (last) or 1..{layers} for this encoder"
                )
        order = sorted(range(len(input_ids)), key=lambda i: len(input_ids[i]))
        per_sentence: list[torch.Tensor | None] = [None] * len(input_ids)
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            longest = max(len(input_ids[i]) for i in index)
            ids = torch.zeros(len(index), longest, dtype=torch.long)
            mask = torch.zeros(len(index), longest, dtype=torch.long)
            for row, i in enumerate(index):
                ids[row, : len(input_ids[i])] = torch.tensor(input_ids[i])
                mask[row, : len(input_ids[i])] = 1
            if self.layer == -1:
                hidden = self._encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            else:  # stop at the cached layer: the layers above it would be wasted work
                hidden = run_layers(self._encoder, self._encoder.embeddings(input_ids=ids), mask, 0, self.layer)
            for row, i in enumerate(index):
                per_sentence[i] = hidden[row, : len(input_ids[i])].to(torch.float16)
        offsets = torch.tensor([0] + [len(ids) for ids in input_ids]).cumsum(0)
        return torch.cat(per_sentence), offsets

    def _build(self, folder: Path, key: str, input_ids: list[list[int]], labels: list[int]) -> None:
        states, offsets = self.encode(input_ids)
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=self.root))
        try:
            tensors = {"states": states, "offsets": offsets, "labels": torch.tensor(labels, dtype=torch.long)}
            save_file(tensors, staging / "states.safetensors")
            meta = {
                "format": CACHE_FORMAT,
                "key": key,
                "encoder": self.encoder_name,
                "layer": self.layer,
                "max_length": self.max_length,
                "sentences": len(labels),
                "tokens": int(offsets[-1]),
            }
            (staging / "meta.json").write_text(json.dumps(meta, indent=2))
            try:
                staging.rename(folder)
            except OSError:  # another process wrote the same entry first
                if not folder.is_dir():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
