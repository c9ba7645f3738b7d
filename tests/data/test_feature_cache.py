import logging

import pytest
import torch
from omegaconf import open_dict

from emotion_lab.data.datamodule import EmotionDataModule
from emotion_lab.data.feature_cache import FeatureCache, collate_states
from emotion_lab.encoders.loading import load_encoder
from emotion_lab.models.networks import BiLSTMAttentionNet
from emotion_lab.train import train
from tests.conftest import QUIET, compose_config

IDS = [[101, 1045, 2514, 3407, 102], [101, 2572, 102], [101, 1045, 2572, 2061, 6015, 1997, 2009, 102]]
LABELS = [1, 0, 4]


def entries(folder):
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_hit_and_miss(tmp_path, tiny_encoder, caplog):
    caplog.set_level(logging.INFO)
    cache = FeatureCache(str(tmp_path), tiny_encoder)
    first = cache.get("train", IDS, LABELS)
    assert first.lengths == [5, 3, 8] and first.states.dtype == torch.float16 and first.labels.tolist() == LABELS
    cache.get("train", IDS, LABELS)
    assert "feature cache hit" in caplog.text and len(entries(tmp_path)) == 1
    # Any change that alters the states gives a new entry, never the stale one.
    FeatureCache(str(tmp_path), tiny_encoder, max_length=64).get("train", IDS, LABELS)
    FeatureCache(str(tmp_path), tiny_encoder, layer=1).get("train", IDS, LABELS)
    cache.get("train", IDS[:2], LABELS[:2])
    cache.get("train", IDS, [1, 0, 5])
    assert len(entries(tmp_path)) == 5


def test_lower_layer_states_differ_from_the_last(tmp_path, tiny_encoder):
    last = FeatureCache(str(tmp_path), tiny_encoder).get("train", IDS, LABELS)
    first_layer = FeatureCache(str(tmp_path), tiny_encoder, layer=1).get("train", IDS, LABELS)
    assert last.states.shape == first_layer.states.shape
    assert not torch.allclose(last.states.float(), first_layer.states.float())
    with pytest.raises(ValueError, match="feature_cache.layer=7"):
        FeatureCache(str(tmp_path), tiny_encoder, layer=7).get("train", IDS, LABELS)


def test_unreadable_cache_is_rebuilt_not_trusted(tmp_path, tiny_encoder, caplog):
    cache = FeatureCache(str(tmp_path), tiny_encoder)
    good = cache.get("train", IDS, LABELS).states.clone()  # loaded tensors map the file: copy before corrupting it
    (entry,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    (entry / "states.safetensors").write_bytes(b"truncated")
    rebuilt = cache.get("train", IDS, LABELS)
    assert "unusable" in caplog.text and torch.equal(rebuilt.states, good)
    (entry / "meta.json").write_text('{"format": 0, "key": "other"}')
    cache.get("train", IDS, LABELS)
    assert caplog.text.count("unusable") == 2


def test_cached_and_uncached_logits_agree(tmp_path, data_dir, tiny_encoder):
    torch.manual_seed(0)
    net = BiLSTMAttentionNet(tiny_encoder, lstm_hidden=8, attn_heads=2, freeze_encoder=True).eval()
    plain = EmotionDataModule(tiny_encoder, dir=str(data_dir), eval_batch_size=7)
    plain.setup()
    cached = EmotionDataModule(
        tiny_encoder, dir=str(data_dir), eval_batch_size=7, feature_cache={"enabled": True, "dir": str(tmp_path)}
    )
    cached.setup()
    with torch.no_grad():
        for a, b in zip(plain.val_dataloader(), cached.val_dataloader()):
            assert torch.equal(a["labels"], b["labels"])
            hidden, mask = net.encode(a["input_ids"], a["attention_mask"])
            from_cache = net.head(b["hidden"], b["attention_mask"])
            # The cached path is the uncached one on fp16-rounded states (the cache encodes in other
            # batches, so padding changes the fp32 states in the last bits before rounding) ...
            assert torch.allclose(from_cache, net.head(hidden.half().float(), mask), atol=1e-4)
            # ... and fp16 rounding moves the logits by about 1e-4 (LayerNorm-scaled states ~1).
            assert torch.allclose(from_cache, net(a["input_ids"], a["attention_mask"]), atol=1e-3)


def test_states_cached_at_a_lower_layer_continue_through_the_layers_above(tmp_path, data_dir, tiny_encoder):
    torch.manual_seed(0)
    net = BiLSTMAttentionNet(tiny_encoder, lstm_hidden=8, attn_heads=2, frozen_layers=1).eval()
    plain = EmotionDataModule(tiny_encoder, dir=str(data_dir), eval_batch_size=7)
    plain.setup()
    cached = EmotionDataModule(
        tiny_encoder,
        dir=str(data_dir),
        eval_batch_size=7,
        feature_cache={"enabled": True, "dir": str(tmp_path), "layer": 1},
    )
    cached.setup()
    with torch.no_grad():
        for a, b in zip(plain.val_dataloader(), cached.val_dataloader()):
            layer_1 = net.encoder(**{k: a[k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True)
            from_cache = net.forward_from_layer(b["hidden"], b["attention_mask"], 1)
            rounded = layer_1.hidden_states[1].half().float()
            assert torch.allclose(from_cache, net.forward_from_layer(rounded, a["attention_mask"], 1), atol=1e-4)
            assert torch.allclose(from_cache, net(a["input_ids"], a["attention_mask"]), atol=1e-3)
            # The layer above really ran: the head alone on layer-1 states gives other logits.
            assert not torch.allclose(from_cache, net.head(b["hidden"], b["attention_mask"]), atol=1e-3)


def test_collate_pads_and_masks():
    batch = collate_states(
        [
            (torch.ones(2, 4, dtype=torch.float16), torch.tensor(1)),
            (torch.ones(5, 4, dtype=torch.float16), torch.tensor(3)),
        ]
    )
    assert batch["hidden"].shape == (2, 5, 4) and batch["hidden"].dtype == torch.float32
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0, 0], [1] * 5] and batch["hidden"][0, 2:].abs().sum() == 0


def test_cached_head_experiment_trains(tmp_path, data_dir, tiny_encoder):
    cfg = compose_config(
        "train",
        [
            "experiment=cached_head",
            f"model.net.encoder_name={tiny_encoder}",
            "model.net.lstm_hidden=8",
            f"data.dir={data_dir}",
            f"paths.log_dir={tmp_path}",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            "callbacks.progress_bar=null",
            "logger=csv",
        ],
        tmp_path / "run",
    )
    pretrained = load_encoder(tiny_encoder).state_dict()
    metrics, objects = train(cfg)
    assert objects["datamodule"].cached is not None and "test/f1_weighted" in metrics
    # Only the head trained: the encoder is the pretrained one, weight for weight.
    trained = objects["model"].net.encoder.state_dict()
    assert trained.keys() == pretrained.keys() and all(torch.equal(trained[k], pretrained[k]) for k in pretrained)
    with open_dict(cfg):
        cfg.model.net.freeze_encoder = False
    with pytest.raises(ValueError, match="Set model.net.freeze_encoder=true"):
        train(cfg)


def test_a_cache_below_the_trainable_layers_fine_tunes_only_the_layers_above_it(tmp_path, data_dir, tiny_encoder):
    overrides = [
        "data.feature_cache.enabled=true",
        f"model.net.encoder_name={tiny_encoder}",
        "model.net.frozen_layers=1",  # the tiny encoder has 2 layers: layer 2 fine-tunes on cached layer-1 states
        "model.net.lstm_hidden=8",
        f"data.dir={data_dir}",
        f"paths.log_dir={tmp_path}",
        "trainer.max_epochs=1",
        *QUIET,
    ]
    cfg = compose_config("train", [*overrides, "data.feature_cache.layer=1"], tmp_path / "run")
    pretrained = load_encoder(tiny_encoder).state_dict()
    metrics, objects = train(cfg)
    trained = objects["model"].net.encoder.state_dict()
    assert "test/f1_weighted" in metrics
    assert all(torch.equal(trained[k], pretrained[k]) for k in pretrained if not k.startswith("encoder.layer.1."))
    upper = "encoder.layer.1.output.dense.weight"
    assert not torch.equal(trained[upper], pretrained[upper])

    cfg = compose_config("train", [*overrides, "data.feature_cache.layer=2"], tmp_path / "run2")
    with pytest.raises(ValueError, match=r"feature_cache.layer=2 .*\(model.net.frozen_layers=1"):
        train(cfg)
