import json

import pytest

pytest.importorskip("onnxruntime")

from emotion_lab.tools.bench_inference import main  # noqa: E402


@pytest.mark.slow
def test_bench_inference_compares_every_backend_with_the_pipeline(tmp_path, tiny_onnx_model, data_dir):
    main(
        [
            str(tiny_onnx_model),
            "--threads",
            "1",
            "--latency-n",
            "5",
            "--data-dir",
            str(data_dir),
            "--out",
            str(tmp_path),
        ]
    )
    results = json.loads((tmp_path / "results.json").read_text())
    rows = {r["variant"]: r for r in results["rows"]}
    assert set(rows) == {
        "emotion_lab torch fp32",
        "emotion_lab torch int8",
        "emotion_lab onnx fp32",
        "emotion_lab onnx int8",
        "transformers pipeline (same backbone, linear head)",
    }
    pipeline = rows["transformers pipeline (same backbone, linear head)"]
    assert pipeline["p50_vs_pipeline"] == 1.0 and pipeline.get("f1_weighted") is None
    for row in rows.values():
        assert row["p50_ms"] > 0 and row["sentences_per_s"] > 0 and row["threads"] == 1
        assert row["p50_vs_pipeline"] == pytest.approx(row["p50_ms"] / pipeline["p50_ms"])
    # The ONNX graph computes the torch network: the same predictions, so the same F1.
    assert rows["emotion_lab onnx fp32"]["f1_weighted"] == rows["emotion_lab torch fp32"]["f1_weighted"]
    assert 0 <= rows["emotion_lab onnx int8"]["f1_macro"] <= 1
    assert {"tokenizer", "encoder", "head", "head: BiLSTM"} <= set(results["torch_fp32_stages_ms"])
    assert results["meta"]["cpu"] and results["meta"]["provenance"]["torch"]
    assert (tmp_path / "results.md").read_text().count("| emotion_lab") == 4
