"""ONNX export: dynamic batch and length, logits equal to torch, int8 runs, and the onnx backend of the predictor."""

import shutil

import pytest
import torch

pytest.importorskip("onnxruntime")

from emotion_lab.errors import ModelLoadError  # noqa: E402
from emotion_lab.inference.export import export  # noqa: E402
from emotion_lab.inference.onnx import OnnxBackend, check_onnx  # noqa: E402
from emotion_lab.inference.predictor import EmotionPredictor, TorchBackend  # noqa: E402

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


def torch_and_onnx(folder, texts, int8=False):
    """(logits, attention) of the torch network and of the folder's ONNX file on the same batch."""
    torch_model = EmotionPredictor.from_pretrained(folder, backend="torch")
    onnx = OnnxBackend(folder / ("model.int8.onnx" if int8 else "model.onnx"), threads=1)
    batch = torch_model.tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.inference_mode():
        expected = TorchBackend(torch_model.net)(batch["input_ids"], batch["attention_mask"], with_attention=True)
    return expected, onnx(batch["input_ids"], batch["attention_mask"], with_attention=True), batch["attention_mask"]


@pytest.mark.parametrize("size", [1, 3, 7])
def test_onnx_logits_and_attention_match_torch_for_any_batch_and_length(tiny_onnx_model, size):
    for start in range(0, len(TEXTS) - size + 1, size):
        (logits, attention), (got, got_attention), mask = torch_and_onnx(tiny_onnx_model, TEXTS[start : start + size])
        assert got.shape == logits.shape
        assert torch.allclose(got, logits, atol=1e-4), (got - logits).abs().max()
        real = mask.bool()[:, :, None] & mask.bool()[:, None, :]  # rows and columns of real tokens
        assert got_attention.shape == attention.shape == (size, mask.shape[1], mask.shape[1])
        assert torch.allclose(got_attention[real], attention[real], atol=1e-4)


def test_int8_onnx_runs_and_stays_close(tiny_onnx_model):
    import onnx
    from onnx.numpy_helper import to_array

    graph = onnx.load(str(tiny_onnx_model / "model.int8.onnx")).graph
    weights = {t.name for t in graph.initializer}
    float_weighted = [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm", "LSTM") and weights & {*n.input}]
    assert not float_weighted, f"weights left in float: {float_weighted}"
    # 7-bit: a CPU without VNNI sums uint8 x int8 pairs in int16, which 8-bit weights overflow (there only).
    int8 = [abs(to_array(t).astype(int)).max() for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert int8 and max(int8) <= 64
    (logits, _), (got, _), _ = torch_and_onnx(tiny_onnx_model, TEXTS, int8=True)
    assert got.shape == logits.shape and torch.isfinite(got).all()
    # Quantized, so not equal; but far closer than the logits are to each other (a wrong graph is not).
    spread = (logits - logits.mean(0)).abs().max()
    assert (got - logits).abs().max() < 0.25 * spread, ((got - logits).abs().max(), spread)


def test_onnx_predictor_gives_the_torch_predictions(tiny_onnx_model):
    torch_preds = EmotionPredictor.from_pretrained(tiny_onnx_model, backend="torch").predict(TEXTS, top_words=2)
    onnx_model = EmotionPredictor.from_pretrained(tiny_onnx_model, backend="onnx")
    assert onnx_model.net is None and onnx_model.backend.name == "onnx fp32" and onnx_model.temperature == 0.5
    (logits, _), _, _ = torch_and_onnx(tiny_onnx_model, TEXTS[:1])
    assert list(onnx_model.predict(TEXTS[:1])[0].probs.values()) == pytest.approx(
        (logits[0] / 0.5).softmax(-1).tolist()
    )
    onnx_preds = onnx_model.predict(TEXTS, top_words=2)
    for ours, theirs in zip(onnx_preds, torch_preds):
        assert ours.label == theirs.label
        assert ours.probs == pytest.approx(theirs.probs, abs=1e-5)
        assert [w for w, _ in ours.top_words] == [w for w, _ in theirs.top_words]
    assert EmotionPredictor.from_pretrained(tiny_onnx_model, backend="auto").backend.name == "onnx fp32"
    assert EmotionPredictor.from_pretrained(tiny_onnx_model, backend="onnx", int8=True).backend.name == "onnx int8"


def test_a_folder_without_onnx_names_the_export_command(tiny_model):
    assert EmotionPredictor.from_pretrained(tiny_model, backend="auto").backend.name == "torch fp32"
    assert EmotionPredictor.from_pretrained(tiny_model, backend="auto", int8=True).backend.name == "torch int8"
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


def test_a_graph_that_fails_its_check_is_not_kept(tiny_model, tmp_path):
    from emotion_lab.inference.onnx import export_onnx

    predictor = EmotionPredictor.from_pretrained(tiny_model)
    with pytest.raises(RuntimeError, match="differ from torch"):
        export_onnx(predictor.net, predictor.tokenizer, tmp_path / "model.onnx", atol=-1.0)
    assert list(tmp_path.iterdir()) == []  # neither model.onnx nor a partial file


def test_auto_int8_falls_back_to_torch_without_the_int8_file(tiny_onnx_model, tmp_path):
    folder = export(tiny_onnx_model, tmp_path / "model")
    export(folder, folder, onnx=True)
    (folder / "model.int8.onnx").unlink()
    assert EmotionPredictor.from_pretrained(folder, backend="auto").backend.name == "onnx fp32"
    assert EmotionPredictor.from_pretrained(folder, backend="auto", int8=True).backend.name == "torch int8"


def test_exporting_over_a_folder_drops_its_old_onnx_files(tiny_onnx_model, tmp_path):
    folder = export(tiny_onnx_model, tmp_path / "model", onnx=True)
    assert (folder / "model.onnx").is_file() and (folder / "model.int8.onnx").is_file()
    export(tiny_onnx_model, folder, onnx=False)  # new weights, no ONNX: the old graphs must not be served with them
    assert not (folder / "model.onnx").exists() and not (folder / "model.int8.onnx").exists()
    assert EmotionPredictor.from_pretrained(folder, backend="auto").backend.name == "torch fp32"


@pytest.mark.parametrize(
    "net_config",
    [
        {"_target_": "emotion_lab.models.networks.EncoderLinearNet"},
        {"_target_": "emotion_lab.models.networks.BiLSTMAttentionNet", "lstm_hidden": 16, "attn_heads": 0},
        {"_target_": "emotion_lab.models.networks.BiLSTMAttentionNet", "lstm_layers": 0, "attn_heads": 2},
    ],
    ids=["encoder_linear", "no_attention", "no_lstm"],
)
def test_every_network_variant_exports(tiny_encoder, tmp_path, net_config):
    from emotion_lab.encoders.loading import load_tokenizer
    from emotion_lab.models.loading import build_network

    torch.manual_seed(0)
    net = build_network({**net_config, "encoder_name": tiny_encoder}, ())
    folder = EmotionPredictor(net, load_tokenizer(tiny_encoder), max_length=64).save_pretrained(tmp_path / "m")
    export(folder, folder, onnx=True)  # checks the logits against torch on batches of many lengths
    onnx_model = EmotionPredictor.from_pretrained(folder, backend="onnx")
    torch_model = EmotionPredictor.from_pretrained(folder, backend="torch")
    for ours, theirs in zip(onnx_model.predict(TEXTS), torch_model.predict(TEXTS)):
        assert ours.probs == pytest.approx(theirs.probs, abs=1e-5)


def test_an_onnx_file_with_external_data_is_refused_before_a_session_exists(tiny_onnx_model, tmp_path, monkeypatch):
    import onnx
    import onnxruntime

    folder = tmp_path / "model"
    shutil.copytree(tiny_onnx_model, folder)
    model = onnx.load(str(folder / "model.onnx"))
    onnx.save(model, str(folder / "model.onnx"), save_as_external_data=True, location="weights.bin", size_threshold=0)
    monkeypatch.setattr(onnxruntime, "InferenceSession", lambda *a, **k: pytest.fail("a session was created"))
    with pytest.raises(ModelLoadError, match="point at external data files"):
        EmotionPredictor.from_pretrained(folder, backend="onnx")


def test_a_folder_exported_by_default_carries_onnx_and_predict_runs_it(trained, tmp_path):
    folder = export(trained["ckpt"], tmp_path / "model")  # onnx=auto, as training exports: the extra is here
    assert (folder / "model.onnx").is_file() and (folder / "model.int8.onnx").is_file()
    assert EmotionPredictor.from_pretrained(folder, backend="auto").backend.name == "onnx fp32"


def test_the_onnx_option_says_what_is_missing_and_what_is_allowed(monkeypatch):
    import importlib.util

    from emotion_lab.errors import UserInputError
    from emotion_lab.inference.export import wants_onnx

    with pytest.raises(UserInputError, match=r"^onnx='maybe': allowed values are true, false, auto$"):
        wants_onnx("maybe")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else find_spec(name))
    with pytest.raises(UserInputError, match=r"onnx=true needs the onnx extra \(onnxruntime missing\)"):
        wants_onnx(True)
    assert wants_onnx("auto") is False and wants_onnx(False) is False


def test_a_network_the_exporter_cannot_trace_leaves_a_torch_folder_under_auto(
    tiny_model, tmp_path, monkeypatch, caplog
):
    import emotion_lab.inference.onnx

    def untraceable(net, tokenizer, path, **kwargs):
        path.write_bytes(b"half a graph")
        raise RuntimeError("cannot trace this network")

    monkeypatch.setattr(emotion_lab.inference.onnx, "export_onnx", untraceable)
    folder = export(tiny_model, tmp_path / "auto")
    assert not (folder / "model.onnx").exists() and not (folder / "model.int8.onnx").exists()
    assert "no ONNX files written (RuntimeError: cannot trace this network)" in caplog.text
    assert EmotionPredictor.from_pretrained(folder, backend="auto").backend.name == "torch fp32"
    with pytest.raises(RuntimeError, match="cannot trace"):
        export(tiny_model, tmp_path / "required", onnx=True)
    assert not (tmp_path / "required").exists()
