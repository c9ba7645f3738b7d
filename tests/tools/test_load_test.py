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


SHORT_DEADLINES = ["--server-arg=--header-timeout=1", "--server-arg=--body-timeout=1"]


@pytest.mark.slow
def test_probe_only_reports_how_long_each_slow_client_is_held(tmp_path, tiny_onnx_model):
    code = main(
        ["--model", str(tiny_onnx_model), "--probe-only", "--seconds", "8", "--out", str(tmp_path)] + SHORT_DEADLINES
    )
    assert code == 0
    held = {h["kind"]: h for h in json.loads((tmp_path / "results.json").read_text())["probe"]}
    assert set(held) == {"headers never finished", "body never sent", "body trickled", "idle"}
    assert all(h["closed"] and h["held_s"] < 5 for h in held.values())  # closed by the server, not by the 8 s cap
    assert held["body never sent"]["answer"] == held["body trickled"]["answer"] == "HTTP/1.1 408 Request Timeout"
    assert held["idle"]["answer"] == held["headers never finished"]["answer"] == ""


@pytest.mark.slow
def test_slow_and_idle_clients_ride_along_each_level(tmp_path, tiny_onnx_model, data_dir):
    args = ["--model", str(tiny_onnx_model), "--threads", "1", "--levels", "2", "--seconds", "4"]
    args += ["--slow-clients", "3", "--idle-clients", "4", "--data-dir", str(data_dir), "--out", str(tmp_path)]
    assert main(args + SHORT_DEADLINES) == 0  # no normal request failed
    [row] = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert (row["slow_clients"], row["idle_clients"]) == (3, 4) and row["health_p50_ms"] > 0
    hostile = row["hostile"]
    assert set(hostile) == {"headers never finished", "body never sent", "body trickled", "idle"}
    # Each was closed by the server (about every second) and came back.
    assert all(h["closed_by_server"] >= 2 and h["held_s_max"] < 3 for h in hostile.values())
    assert hostile["body never sent"]["answers"] == ["HTTP/1.1 408 Request Timeout"]
    assert "| 2 | 3, 4 |" in (tmp_path / "results.md").read_text()


def test_only_loopback_urls_are_load_tested(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--url", "http://10.1.2.3:8000", "--probe-only"])
    assert exit_info.value.code == 2 and "a loopback address only" in capsys.readouterr().err


@pytest.mark.slow
def test_explaining_clients_ride_along_and_get_their_own_table(tmp_path, tiny_onnx_model, data_dir):
    args = ["--model", str(tiny_onnx_model), "--threads", "1", "--levels", "1", "--seconds", "3"]
    args += ["--explain-clients", "1", "--data-dir", str(data_dir), "--out", str(tmp_path)]
    assert main(args) == 0  # no prediction failed beside the explanations
    [row] = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert row["explain_clients"] == 1 and row["explanations"] > 0 and row["explain_p50_ms"] > 0
    assert row["requests"] > 0 and row["failed"] == 0
    assert "| 1 | 1 |" in (tmp_path / "results.md").read_text().split("explanation p50 ms")[1]
