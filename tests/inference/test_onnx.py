"""ONNX export: dynamic batch and length, logits equal to torch, int8 runs, and the onnx backend of the predictor."""

import pytest
import torch

from emotion_lab.errors import ModelLoadError
from emotion_lab.inference.onnx import OnnxBackend, check_onnx
from emotion_lab.inference.predictor import EmotionPredictor

pytest.importorskip("onnxruntime")

# Lengths and batch sizes other than the export's example (2 sentences): a graph fixed to the
# example's shape fails or differs on these.
TEXTS = [
    "ok",
    "i feel happy",
    "i am so scared of the dark and of the noises outside my window at night",
    "she was furious",
    "what a wonderful surprise to see all of my old friends again after so many years away from home",
    "i feel lonely and sad and nobody calls me any more " * 4,
    "love",
]


def torch_and_onnx_logits(folder, texts, int8=False):
    torch_model = EmotionPredictor.from_pretrained(folder, backend="torch")
    onnx = OnnxBackend(folder / ("model.int8.onnx" if int8 else "model.onnx"), threads=1)
    batch = torch_model.tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.inference_mode():
        expected = torch_model.net(batch["input_ids"], batch["attention_mask"])
    got, attention = onnx(batch["input_ids"], batch["attention_mask"], with_attention=True)
    return expected, got, attention


@pytest.mark.parametrize("size", [1, 3, 7])
def test_onnx_logits_match_torch_for_any_batch_and_length(tiny_onnx_model, size):
    for start in range(0, len(TEXTS) - size + 1, size):
        expected, got, attention = torch_and_onnx_logits(tiny_onnx_model, TEXTS[start : start + size])
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
        length = attention.shape[-1]
        assert attention.shape == (size, length, length)


def test_int8_onnx_runs_and_stays_close(tiny_onnx_model):
    expected, got, _ = torch_and_onnx_logits(tiny_onnx_model, TEXTS, int8=True)
    assert got.shape == expected.shape and torch.isfinite(got).all()
    assert (got - expected).abs().max() < 0.5  # quantized, so not equal; a wrong graph is far off


def test_onnx_predictor_gives_the_torch_predictions(tiny_onnx_model):
    torch_preds = EmotionPredictor.from_pretrained(tiny_onnx_model, backend="torch").predict(TEXTS, top_words=2)
    onnx_model = EmotionPredictor.from_pretrained(tiny_onnx_model, backend="onnx")
    assert onnx_model.net is None and onnx_model.backend.name == "onnx fp32"
    onnx_preds = onnx_model.predict(TEXTS, top_words=2)
    for ours, theirs in zip(onnx_preds, torch_preds):
        assert ours.label == theirs.label
        assert ours.probs == pytest.approx(theirs.probs, abs=1e-5)
        assert [w for w, _ in ours.top_words] == [w for w, _ in theirs.top_words]
    assert EmotionPredictor.from_pretrained(tiny_onnx_model, backend="auto").backend.name == "onnx fp32"
    assert EmotionPredictor.from_pretrained(tiny_onnx_model, backend="onnx", int8=True).backend.name == "onnx int8"


def test_a_folder_without_onnx_names_the_export_command(tiny_model):
    assert EmotionPredictor.from_pretrained(tiny_model, backend="auto").backend.name == "torch fp32"
    with pytest.raises(ModelLoadError, match="no model.onnx.*onnx=true"):
        EmotionPredictor.from_pretrained(tiny_model, backend="onnx")
    with pytest.raises(ModelLoadError, match="backend='tf'.*allowed"):
        EmotionPredictor.from_pretrained(tiny_model, backend="tf")


def test_a_wrong_onnx_file_is_refused(tiny_onnx_model, tmp_path):
    predictor = EmotionPredictor.from_pretrained(tiny_onnx_model, backend="torch")
    other = EmotionPredictor.from_pretrained(tiny_onnx_model, backend="torch")
    with torch.no_grad():
        other.net.classifier.bias.add_(1.0)
    with pytest.raises(RuntimeError, match="differ from torch"):
        check_onnx(other.net, predictor.tokenizer, tiny_onnx_model / "model.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelLoadError, match="broken.onnx: not a loadable ONNX model"):
        OnnxBackend(tmp_path / "broken.onnx")
