"""bench_inference: every variant's row holds its own measurements, ratios against the pipeline of the
same thread count, and the F1 of that variant's own predictions."""

import json
import math

import pytest
import torch

pytest.importorskip("onnxruntime")

from emotion_lab.inference.predictor import EmotionPredictor  # noqa: E402
from emotion_lab.labels import LABELS  # noqa: E402
from emotion_lab.tools import bench_inference  # noqa: E402

PIPELINE = "transformers pipeline (same backbone, linear head)"
# Timings the fakes report (p50 ms and sentences/s per variant); the pipeline is twice as slow with 2 threads.
P50 = {"torch fp32": 2.0, "torch int8": 1.0, "onnx fp32": 3.0, "onnx int8": 0.5, "pipeline": 4.0}
RATE = {"torch fp32": 300.0, "torch int8": 500.0, "onnx fp32": 200.0, "onnx int8": 800.0, "pipeline": 100.0}
# The ratios those give, worked out by hand: p50 / pipeline p50 and rate / pipeline rate, per thread count.
P50_RATIO = {1: {"torch fp32": 0.5, "torch int8": 0.25, "onnx fp32": 0.75, "onnx int8": 0.125, "pipeline": 1.0}}
P50_RATIO[2] = {k: v / 2 if k != "pipeline" else 1.0 for k, v in P50_RATIO[1].items()}
RATE_RATIO = {1: {"torch fp32": 3.0, "torch int8": 5.0, "onnx fp32": 2.0, "onnx int8": 8.0, "pipeline": 1.0}}
RATE_RATIO[2] = {k: v * 2 if k != "pipeline" else 1.0 for k, v in RATE_RATIO[1].items()}


@pytest.fixture(scope="module")
def varied_model(tmp_path_factory, tiny_model, data_dir):
    """The tiny random model with its classifier's bias set to cancel the mean pooled feature of the
    test sentences: its predictions vary across classes (the random one answers nearly one class)."""
    predictor = EmotionPredictor.from_pretrained(tiny_model)
    texts = [line.rsplit(";", 1)[0] for line in (data_dir / "test.txt").read_text().splitlines()]
    features = []
    hook = predictor.net.classifier.register_forward_hook(lambda module, args, out: features.append(args[0]))
    predictor.predict(texts)
    hook.remove()
    mean = torch.cat(features).mean(0)
    with torch.no_grad():
        predictor.net.classifier.weight.mul_(50)
        predictor.net.classifier.bias.copy_(-predictor.net.classifier.weight @ mean)
    return predictor.save_pretrained(tmp_path_factory.mktemp("varied") / "model")


def gold_labels(data_dir) -> dict[str, str]:
    return dict(line.rsplit(";", 1) for line in (data_dir / "test.txt").read_text().splitlines())


@pytest.mark.slow
def test_rows_ratios_and_scores_are_each_variants_own(tmp_path, varied_model, data_dir, monkeypatch):
    gold = gold_labels(data_dir)
    predicted: dict[tuple[str, int], list[str]] = {}
    current = {}

    def variant(fn) -> str | None:
        if isinstance(fn, EmotionPredictor):
            return fn.backend.name
        return "pipeline" if type(fn).__name__.endswith("Pipeline") else None

    def fake_latency(fn, texts, warmup=20):
        fn(texts[0])  # each variant really runs
        current["variant"] = variant(fn)
        if current["variant"] is None:  # a stage of the breakdown
            return 1.0, 1.0
        threads = torch.get_num_threads()
        p50 = P50[current["variant"]] * (threads if current["variant"] == "pipeline" else 1)
        return p50, 2 * p50

    def fake_throughput(fn, texts):
        name, threads = current["variant"], torch.get_num_threads()
        labels = fn(texts)
        predicted[name, threads] = labels
        # Scored labels known by hand: torch fp32 answers the gold label, onnx int8 says "joy" throughout;
        # the others keep their real predictions.
        if name == "torch fp32":
            labels = [gold[t] for t in texts]
        elif name == "onnx int8":
            labels = ["joy"] * len(texts)
        return RATE[name] / (threads if name == "pipeline" else 1), labels

    monkeypatch.setattr(bench_inference, "_latency_ms", fake_latency)
    monkeypatch.setattr(bench_inference, "_throughput", fake_throughput)
    argv = [str(varied_model), "--threads", "1", "2", "--latency-n", "4", "--data-dir", str(data_dir)]
    bench_inference.main([*argv, "--out", str(tmp_path)])

    results = json.loads((tmp_path / "results.json").read_text())
    rows = {(r["variant"], r["threads"]): r for r in results["rows"]}
    names = {f"emotion_lab {name}": name for name in ("torch fp32", "torch int8", "onnx fp32", "onnx int8")}
    names[PIPELINE] = "pipeline"
    assert set(rows) == {(variant, threads) for variant in names for threads in (1, 2)}
    for (variant, threads), row in rows.items():
        name = names[variant]
        assert row["p50_vs_pipeline"] == pytest.approx(P50_RATIO[threads][name]), (variant, threads)
        assert row["throughput_vs_pipeline"] == pytest.approx(RATE_RATIO[threads][name]), (variant, threads)
    assert rows[PIPELINE, 1].get("f1_weighted") is None  # an untrained head: no score
    # Scores by hand: all right is 1; "joy" for all 24 (4 per class) gives joy F1 2/7, others 0, so 1/21.
    assert rows["emotion_lab torch fp32", 1]["f1_weighted"] == rows["emotion_lab torch fp32", 1]["f1_macro"] == 1.0
    assert rows["emotion_lab onnx int8", 2]["f1_weighted"] == pytest.approx(1 / 21)
    assert rows["emotion_lab onnx int8", 2]["f1_macro"] == pytest.approx(1 / 21)

    # The ONNX graph computes the torch network: the same labels, and they are not one class.
    assert predicted["onnx fp32", 1] == predicted["torch fp32", 1] == predicted["torch fp32", 2]
    assert len(set(predicted["torch fp32", 1])) >= 3 and set(predicted["torch fp32", 1]) <= set(LABELS)
    assert {"tokenizer", "encoder", "head", "head: BiLSTM"} <= set(results["torch_fp32_stages_ms"])
    assert results["meta"]["cpu"] and results["meta"]["provenance"]["torch"]
    table = (tmp_path / "results.md").read_text()
    assert table.count("| emotion_lab") == 8 and "| 0.12x |" in table and "| 8.00x |" in table


@pytest.mark.slow
def test_a_real_measurement_runs_end_to_end(tmp_path, tiny_onnx_model, data_dir):
    """No fakes: each timing is a positive, finite number of milliseconds."""
    argv = [str(tiny_onnx_model), "--threads", "1", "--latency-n", "5", "--data-dir", str(data_dir)]
    bench_inference.main([*argv, "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert len(rows) == 5
    for row in rows:
        assert 0 < row["p50_ms"] <= row["p95_ms"] < math.inf and 0 < row["sentences_per_s"] < math.inf
