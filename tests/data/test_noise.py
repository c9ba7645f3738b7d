"""`data.noise`: each epoch's noise is fixed by seed, epoch and sentence; only training sentences get it;
what it cannot work with is refused in one line."""

from __future__ import annotations

import pytest
import torch

from emotion_lab.data.datamodule import EmotionDataModule
from emotion_lab.data.noise import TextNoise
from emotion_lab.errors import ConfigError

SENTENCE = "i am feeling really nervous about tomorrow"


def test_noise_is_fixed_by_seed_epoch_and_sentence():
    noise = TextNoise(enabled=True, p=1.0, seed=3)
    assert noise(SENTENCE, 2, 5) == TextNoise(enabled=True, p=1.0, seed=3)(SENTENCE, 2, 5)
    by_epoch = {noise(SENTENCE, epoch, 5) for epoch in range(8)}
    by_seed = {TextNoise(enabled=True, p=1.0, seed=s)(SENTENCE, 2, 5) for s in range(8)}
    assert len(by_epoch) > 4 and len(by_seed) > 4 and SENTENCE not in by_epoch | by_seed


def test_p_is_the_share_of_sentences_changed():
    for p in (0.0, 0.3, 1.0):
        noise = TextNoise(enabled=True, p=p, kinds=["mention"], seed=0)  # mention always changes a sentence
        changed = sum(noise(SENTENCE, 0, i) != SENTENCE for i in range(2000))
        assert changed == pytest.approx(2000 * p, abs=60)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kinds": ["typo", "typos"]}, r"data.noise.kinds: unknown perturbation 'typos' \(allowed: typo,"),
        ({"kinds": []}, "data.noise.kinds is empty"),
        ({"p": 1.5}, r"data.noise.p=1.5: must lie in \[0, 1\]"),
    ],
)
def test_bad_options_are_one_line(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TextNoise(enabled=True, **kwargs)


def batches(dm, epoch: int):
    """Each training sentence's token ids, in the order epoch `epoch` yields them."""
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)  # as Lightning does before each epoch
    return [row[mask.bool()].tolist() for b in loader for row, mask in zip(b["input_ids"], b["attention_mask"])]


@pytest.fixture
def module(data_dir, tiny_encoder):
    def make(enabled: bool, **kwargs):
        noise = TextNoise(enabled=enabled, p=1.0, kinds=["typo", "mention", "emoji"], seed=1)
        dm = EmotionDataModule(tiny_encoder, dir=str(data_dir), batch_size=8, noise=noise, **kwargs)
        dm.setup()
        return dm

    return make


def test_only_training_sentences_change_and_each_epoch_its_own_way(module):
    plain, noisy = module(False), module(True)
    for epoch in (0, 1):
        assert batches(noisy, epoch) != batches(plain, epoch)  # same order, other tokens
    # Order aside, the sentences an epoch sees: the same every epoch without noise, others with it.
    assert sorted(batches(plain, 0)) == sorted(batches(plain, 1))
    assert sorted(batches(noisy, 0)) != sorted(batches(noisy, 1))
    loader = noisy.train_dataloader()
    loader.sampler.set_epoch(3)
    assert {epoch for epoch, _ in loader.sampler} == {3}
    # A loader built afresh (as after a restart) sees an epoch's noise exactly as before.
    assert batches(module(True), 1) == batches(noisy, 1)
    for split in ("val_dataloader", "test_dataloader"):
        assert [b["input_ids"].tolist() for b in getattr(noisy, split)()] == [
            b["input_ids"].tolist() for b in getattr(plain, split)()
        ]
    labels = torch.cat([b["labels"] for b in noisy.train_dataloader()])
    assert sorted(labels.tolist()) == sorted(noisy.datasets["train"].with_format(None)["label"])


def test_a_loader_resumed_mid_epoch_continues_the_same_noise(module):
    whole = batches(module(True), 1)
    resumed = module(True)
    resumed.load_state_dict({"epoch": 1, "batches": 3})
    assert batches(resumed, 1) == whole[3 * 8 :]


def test_noise_with_the_feature_cache_is_refused(module, tmp_path):
    with pytest.raises(ConfigError, match="data.noise.enabled=true with data.feature_cache.enabled=true"):
        module(True, feature_cache={"enabled": True, "dir": str(tmp_path)})


def test_loader_workers_see_each_epochs_noise(module):
    """Workers get (epoch, index) keys from the main process: persistent workers need no epoch of their own."""
    expected = [batches(module(True), epoch) for epoch in (0, 1)]
    loader = module(True, num_workers=2).train_dataloader()
    seen = []
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        seen.append([row[m.bool()].tolist() for b in loader for row, m in zip(b["input_ids"], b["attention_mask"])])
    assert seen == expected
