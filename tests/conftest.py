"""Shared fixtures: a tiny random BERT encoder saved as a folder, and tiny synthetic data files."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from emotion_lab.encoders.loading import embedded_encoder_path  # noqa: E402
from emotion_lab.labels import LABELS  # noqa: E402
from emotion_lab.utils.config import CONFIG_DIR  # noqa: E402

# A few cue words per label: the tiny model can learn them, and the data stays synthetic (the real
# dair-ai/emotion text is never copied into the project).
CUES = {
    "sadness": ["sad", "lonely", "miserable"],
    "joy": ["happy", "glad", "cheerful"],
    "love": ["loving", "tender", "caring"],
    "anger": ["angry", "furious", "irritated"],
    "fear": ["scared", "afraid", "nervous"],
    "surprise": ["amazed", "surprised", "shocked"],
}
# No progress bars, CSV logging only: what every test run of the training entry point uses.
QUIET = ["trainer.enable_progress_bar=false", "callbacks.progress_bar=null", "logger=csv"]
FILLERS = ["today", "about my job", "when i think of it", "after the long day at work with everyone", ""]


def synthetic_lines(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        lines.append(f"i feel {rng.choice(CUES[label])} {rng.choice(FILLERS)}".strip() + f";{label}")
    return lines


def write_split_files(folder: Path, sizes: tuple[int, int, int] = (60, 24, 24)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, n) in enumerate(zip(("train.txt", "val.txt", "test.txt"), sizes)):
        (folder / name).write_text("\n".join(synthetic_lines(n, seed=i)) + "\n")
    return folder


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return write_split_files(tmp_path_factory.mktemp("emotion_data"))


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    """A 2-layer, 32-wide random BERT with the default encoder's tokenizer, saved as a folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(str(embedded_encoder_path()), local_files_only=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_encoder):
    """A model folder with the default network settings (padded BiLSTM, attention), random tiny weights
    and temperature 0.5."""
    import torch

    from emotion_lab.encoders.loading import load_tokenizer
    from emotion_lab.inference.predictor import EmotionPredictor
    from emotion_lab.models.networks import BiLSTMAttentionNet

    torch.manual_seed(0)
    net = BiLSTMAttentionNet(tiny_encoder, lstm_hidden=16)
    # A temperature away from 1: a backend or endpoint that skipped it would give other probabilities.
    predictor = EmotionPredictor(net, load_tokenizer(tiny_encoder), max_length=64, temperature=0.5)
    return predictor.save_pretrained(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_onnx_model(tmp_path_factory, tiny_model):
    """The same model folder, with model.onnx and model.int8.onnx written by export."""
    from emotion_lab.inference.export import export

    return export(tiny_model, tmp_path_factory.mktemp("tiny_onnx") / "model", onnx=True)


def compose_config(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=False)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    GlobalHydra.instance().clear()
    return cfg


def tiny_overrides(tiny_encoder: str, data_dir: Path) -> list[str]:
    """What every tiny training run sets: the tiny encoder, a narrow head, the synthetic data, batches of 8."""
    return [
        f"model.net.encoder_name={tiny_encoder}",
        "model.net.lstm_hidden=16",
        f"data.dir={data_dir}",
        "data.batch_size=8",
        "onnx=false",  # ONNX export is tested by itself
    ]


@pytest.fixture
def tiny_train_cfg(tmp_path, data_dir, tiny_encoder) -> DictConfig:
    """The full training config, pointed at the tiny encoder and data, one epoch, CSV logging."""
    return compose_config(
        "train",
        [
            *tiny_overrides(tiny_encoder, data_dir),
            "trainer.max_epochs=1",
            "trainer.num_sanity_val_steps=0",
            "trainer.enable_progress_bar=false",
            "callbacks.progress_bar=null",
            "logger=many",
        ],
        tmp_path,
    )


@pytest.fixture(scope="session")
def trained(tmp_path_factory, data_dir, tiny_encoder) -> dict:
    """One tiny 1-epoch training run through the entry point's `train` (with the spelling step), shared by
    the tests that read its checkpoint, metrics and exported model folder (they copy before they change
    anything)."""
    from emotion_lab.train import train

    out = tmp_path_factory.mktemp("run")
    overrides = [*tiny_overrides(tiny_encoder, data_dir)[:3], "trainer.max_epochs=1", "trainer.num_sanity_val_steps=0"]
    overrides.append("onnx=false")  # the tests that break its folder's safetensors read them, not an ONNX file
    overrides.append("data.spelling=true")  # the model folder and checkpoint carry a spelling dictionary
    metrics, objects = train(compose_config("train", [*overrides, *QUIET], out))
    ckpt = Path(objects["trainer"].checkpoint_callback.best_model_path)
    return {"ckpt": ckpt, "out": out, "model": out / "model", "metrics": metrics}
