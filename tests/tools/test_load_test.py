import json

import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("onnxruntime")

from emotion_lab.tools.load_test import main  # noqa: E402


@pytest.mark.slow
def test_load_test_starts_the_server_and_reports_each_level(tmp_path, tiny_onnx_model, data_dir):
    code = main(
        ["--model", str(tiny_onnx_model), "--threads", "1", "--levels", "1", "4", "--seconds", "2"]
        + ["--data-dir", str(data_dir), "--out", str(tmp_path)]
    )
    assert code == 0  # no failed request
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["meta"]["backend"] == "onnx fp32"
    one, four = results["rows"]
    assert (one["concurrency"], four["concurrency"]) == (1, 4)
    for row in (one, four):
        assert row["requests"] > 0 and row["failed"] == 0 and row["p50_ms"] <= row["p99_ms"]
        assert row["rss_mb_start"] > 0 and row["rss_mb_end"] > 0
    assert one["mean_batch_texts"] == 1.0  # one client never has company
    assert (tmp_path / "results.md").read_text().count("\n") == 4
