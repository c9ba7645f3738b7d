import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from emotion_lab.data.teacher_logits import TeacherLogitsError
from emotion_lab.labels import LABELS
from emotion_lab.tools import bench_head
from emotion_lab.tools.bench import (
    BenchConfigError,
    check_teacher_logits,
    check_validation_only,
    extra_eval_overrides,
    main,
    markdown,
    summarise,
    what_trains,
)
from emotion_lab.tools.results_page import publish
from emotion_lab.utils.config import CONFIG_DIR, compose_train
from tests.conftest import QUIET

# What no bench test reads: each run's figures, and (outside the first test) the out-of-domain set.
NO_FIGURES = ["callbacks.run_figures=null"]
LEAN = [*NO_FIGURES, "data.extra_eval={}"]


@pytest.mark.slow
def test_quick_bench_writes_every_row(tmp_path, data_dir, tiny_encoder):
    code = main(
        [
            "--quick",
            "--seeds",
            "1",
            "--out",
            str(tmp_path),
            f"data.dir={data_dir}",
            f"model.net.encoder_name={tiny_encoder}",
            *QUIET,
            *NO_FIGURES,
        ]
    )
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    rows = {r["row"]: r for r in results["rows"]}
    assert set(rows) == {"tfidf_svm", "finetune", "hybrid", "no_lstm", "no_attention", "ce_loss", "with_augment"}
    for row in rows.values():
        assert 0.0 <= row["test/f1_weighted"] <= 1.0 and row["sentences_per_s"] > 0
        assert row["test_f1/surprise"] is not None
    # The synthetic cue words are trivially separable for TF-IDF: a broken baseline would not be.
    assert rows["tfidf_svm"]["test/f1_weighted"] > 0.9
    # Every trained run has the behaviour suite's columns, from its own <run>/behaviour/results.json.
    assert rows["tfidf_svm"]["behaviour/typo_flip_rate"] is None
    for name, row in rows.items():
        if name != "tfidf_svm":
            suite = json.loads((tmp_path / name / "seed1" / "behaviour" / "results.json").read_text())
            assert row["behaviour/typo_flip_rate"] == suite["summary"]["typo_flip_rate"] is not None
            assert row["behaviour/mft_failure_rate"] == suite["summary"]["mft_failure_rate"]
            # The suite scored the tested weights: its clean score is the run's test score.
            assert suite["clean"]["f1_weighted"] == pytest.approx(row["test/f1_weighted"], abs=1e-6)
    table = (tmp_path / "results.md").read_text()
    assert "| one typo: weighted F1 | one typo: flipped | written tests failed | negation failed |" in table
    assert table.count("\n") == len(rows) + 2
    # Every run says what produced it, and publishing copies the table unedited into docs.
    for runs in results["runs"].values():
        assert {"commit", "date", "cpu", "cpu_native_bf16", "torch"} <= set(runs[0]["provenance"])
    provenance = results["runs"]["hybrid"][0]["provenance"]
    expected = f"{provenance['date'][:10]}_{provenance['commit']}{'-dirty' if provenance['dirty'] else ''}"
    folder = publish(tmp_path, docs=tmp_path / "docs")
    assert folder == tmp_path / "docs" / "results" / expected
    assert (folder / "results.md").read_text() == table
    page = (tmp_path / "docs" / "results.md").read_text()
    assert table.strip() in page and f"results/{expected}/results.json" in page


def test_publish_flag_and_results_page_command(tmp_path, data_dir, tiny_encoder, monkeypatch):
    from emotion_lab.tools import results_page

    monkeypatch.setattr(results_page, "DOCS", tmp_path / "docs")
    out = tmp_path / "bench"
    args = ["--quick", "--rows", "no_lstm", "--seeds", "1", "--out", str(out), "--publish"]
    assert main([*args, f"data.dir={data_dir}", f"model.net.encoder_name={tiny_encoder}", *QUIET, *LEAN]) == 0
    (published,) = (tmp_path / "docs" / "results").iterdir()
    assert (published / "results.json").read_text() == (out / "results.json").read_text()
    (tmp_path / "docs" / "results.md").unlink()
    assert results_page.main([]) == 0  # regenerates the page from the committed files alone
    assert (out / "results.md").read_text().strip() in (tmp_path / "docs" / "results.md").read_text()
    assert results_page.main(["--add", str(tmp_path / "no-such-bench")]) == 2
    # Other published measurements (docs/results/<topic>/<date>_<commit>/) are linked from the page.
    ablation = tmp_path / "docs" / "results" / "ablations" / "2026-01-01_abc1234"
    ablation.mkdir(parents=True)
    (ablation / "report.md").write_text("# 4 runs side by side\n")
    assert results_page.main([]) == 0
    page = (tmp_path / "docs" / "results.md").read_text()
    assert "- ablations: [2026-01-01_abc1234](results/ablations/2026-01-01_abc1234/report.md)" in page
    # The newest combined behaviour table is shown on the page itself, as generated.
    for day, f1 in (("2026-01-01", 0.5), ("2026-01-02", 0.75)):
        _behaviour_report(tmp_path / "docs" / "results" / "robustness" / f"{day}_ab" / "recipe_s1", f1, 0.1)
        (tmp_path / "docs" / "results" / "robustness" / f"{day}_ab" / "notes.md").write_text("# what ran\n")
        results_page.combine(tmp_path / "docs" / "results" / "robustness" / f"{day}_ab")
    assert results_page.main([]) == 0
    page = (tmp_path / "docs" / "results.md").read_text()
    table = (tmp_path / "docs" / "results" / "robustness" / "2026-01-02_ab" / "results.md").read_text()
    assert "## Robustness" in page and "| `recipe_s1` | 0.7500" in page and "| `recipe_s1` | 0.5000" not in page
    assert table.split("\n", 1)[1].split("\n\n", 2)[2].strip() in page  # below the header and notes lines
    assert "[notes.md](results/robustness/2026-01-02_ab/notes.md)" in page  # its link still leads there


def test_table_grows_over_invocations_and_reuses_only_unchanged_runs(tmp_path, data_dir, tiny_encoder, monkeypatch):
    import emotion_lab.train

    common = ["--quick", "--seeds", "1", "--out", str(tmp_path)]
    common += [f"data.dir={data_dir}", f"model.net.encoder_name={tiny_encoder}", *QUIET, *LEAN]

    def table() -> dict:
        return {r["row"]: r for r in json.loads((tmp_path / "results.json").read_text())["rows"]}

    assert main(["--rows", "hybrid", *common]) == 0
    assert main(["--rows", "no_lstm", *common]) == 0
    first = table()
    assert set(first) == {"tfidf_svm", "hybrid", "no_lstm"} and first["hybrid"]["seed_list"] == [1]

    def must_not_train(cfg):
        raise AssertionError(f"trained again: {cfg.paths.output_dir}")

    monkeypatch.setattr(emotion_lab.train, "train", must_not_train)
    assert main(["--rows", "hybrid,no_lstm", *common]) == 0
    assert table()["hybrid"]["test/f1_weighted"] == first["hybrid"]["test/f1_weighted"]
    # Another log folder or progress bar does not change what trains: still reused, still in the table.
    display = [o for o in common if not o.startswith(("trainer.enable_progress_bar", "callbacks.progress_bar"))]
    assert main(["--rows", "hybrid", *display, f"paths.log_dir={tmp_path / 'logs'}"]) == 0
    assert table()["hybrid"]["test/f1_weighted"] == first["hybrid"]["test/f1_weighted"]
    # Other overrides for the same (row, seed): the saved result is stale and must not be reused.
    with pytest.raises(AssertionError, match="trained again"):
        main(["--rows", "hybrid", *common, "model.net.dropout=0.2"])
    (aside,) = (tmp_path / "hybrid").glob("seed1.replaced-*")
    assert (aside / "result.json").is_file()  # the earlier result is kept, out of the table
    # A truncated result counts as unfinished: set aside and trained again, never a traceback.
    (tmp_path / "no_lstm" / "seed1" / "result.json").write_text('{"overrides": [')
    with pytest.raises(AssertionError, match="trained again"):
        main(["--rows", "no_lstm", *common])
    assert list((tmp_path / "no_lstm").glob("seed1.replaced-*"))


def test_selection_on_the_test_split_is_refused(tmp_path):
    cfg = compose_train(["experiment=best_cpu"], tmp_path)
    check_validation_only("ok", cfg)
    with open_dict(cfg):
        cfg.callbacks.early_stopping.monitor = "test/f1_weighted"
    with pytest.raises(BenchConfigError, match="early_stopping.monitor='test/f1_weighted'"):
        check_validation_only("peeking", cfg)


def test_unknown_row_is_named(capsys):
    with pytest.raises(SystemExit):
        main(["--rows", "hybrid,transformer_xl"])
    assert "transformer_xl" in capsys.readouterr().err


def test_head_bench_times_every_setting_on_batches_spread_over_the_epoch(tmp_path, data_dir, tiny_encoder):
    args = ["--encoder", tiny_encoder, "--data-dir", str(data_dir), "--cache-dir", str(tmp_path / "cache")]
    args += ["--out", str(tmp_path / "out"), "--hidden", "4", "--batch-sizes", "8", "16", "--sentences", "20"]
    bench_head.main([*args, "--lstm-impl", "padded", "packed"])
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(r["batch_size"], r["group_by_length"], r["lstm_impl"]) for r in rows] == [
        (8, True, "padded"),
        (8, True, "packed"),
        (16, True, "padded"),
        (16, True, "packed"),
    ]
    # 60 training sentences at ~1 of every 3 batches: the epoch is projected, not timed whole.
    for r in rows:
        assert r["sentences_per_s"] > 0 and 0.0 <= r["padding"] < 1.0
        # Both are rounded to 0.1; the rate's rounding (±0.05) moves 60/rate most when the rate is low.
        rate = r["sentences_per_s"]
        assert r["epoch_s"] == pytest.approx(60 / rate, abs=0.051 + 60 * 0.05 / (rate * (rate - 0.05)))
    assert (tmp_path / "out" / "results.md").read_text().count("\n") == len(rows) + 2


def test_a_distilling_row_needs_teacher_logits_made_on_its_data(tmp_path, data_dir):
    rows = OmegaConf.load(Path(CONFIG_DIR) / "bench.yaml").rows
    distilled = compose_train([*rows.distilled, f"data.dir={data_dir}"], tmp_path)
    with pytest.raises(TeacherLogitsError, match="made on other train data"):
        check_teacher_logits(distilled.data)  # the committed logits fit the full dair-ai/emotion files only
    check_teacher_logits(compose_train([f"data.dir={data_dir}"], tmp_path).data)  # no teacher: nothing to check


def test_saved_results_name_paths_relative_to_the_checkout(tmp_path):
    from emotion_lab.utils.config import PROJECT_ROOT
    from emotion_lab.utils.records import save_results

    meta = {"command": f"bench --out {PROJECT_ROOT}/outputs/b", "data": f"{PROJECT_ROOT.parent}/shared/data/emotion"}
    save_results(tmp_path, {"meta": meta}, f"from {PROJECT_ROOT}/outputs/b\n")
    saved = json.loads((tmp_path / "results.json").read_text())["meta"]
    assert saved == {"command": "bench --out outputs/b", "data": "../shared/data/emotion"}
    assert (tmp_path / "results.md").read_text() == "from outputs/b\n"


def _load_run(folder: Path, backend: str, forward_batch: int, requests: int) -> None:
    folder.mkdir(parents=True)
    meta = {"backend": backend, "limits": {"forward_batch": forward_batch}, "seconds_per_level": 20.0}
    row = {"concurrency": 64, "requests": requests, "failed": 0, "requests_per_s": requests / 20, "p50_ms": 287.23}
    row |= {"p99_ms": 481.06, "rss_mb_start": 553.7, "rss_mb_end": 610.6, "rss_mb_max": 610.6, "mean_batch_texts": 32.3}
    (folder / "results.json").write_text(json.dumps({"meta": meta, "rows": [row]}))


def test_combine_writes_one_table_over_the_load_test_runs_below_a_folder(tmp_path):
    from emotion_lab.tools import results_page

    _load_run(tmp_path / "a-torch-16", "torch fp32", 16, 2882)  # folder names in another order than the rows'
    _load_run(tmp_path / "b-onnx-64", "onnx fp32", 64, 2572)
    _load_run(tmp_path / "c-onnx-16", "onnx fp32", 16, 4237)
    probe = [{"kind": "idle", "held_s": 35.002, "closed": False, "answer": ""}]
    probe += [{"kind": "body never sent", "held_s": 10.0, "closed": True, "answer": "HTTP/1.1 408 Request Timeout"}]
    (tmp_path / "servers" / "x").mkdir(parents=True)
    (tmp_path / "servers" / "x" / "results.json").write_text(json.dumps({"meta": {"seconds": 35.0}, "probe": probe}))
    assert results_page.main(["--combine", str(tmp_path)]) == 0
    page = (tmp_path / "results.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    assert rows == [
        "| `c-onnx-16` | onnx fp32 | 16 | 64 | 4237 | 0 | 212 | 287.2 | 481.1 | 32.3 | 554, 611 (611) |",
        "| `b-onnx-64` | onnx fp32 | 64 | 64 | 2572 | 0 | 129 | 287.2 | 481.1 | 32.3 | 554, 611 (611) |",
        "| `a-torch-16` | torch fp32 | 16 | 64 | 2882 | 0 | 144 | 287.2 | 481.1 | 32.3 | 554, 611 (611) |",
        "| `servers/x` | 35.0 open | 10.0 (HTTP/1.1 408 Request Timeout) |",
    ]
    assert "| run | idle | body never sent |" in page and "notes.md" not in page
    # A results.md someone wrote is not overwritten: its notes belong in notes.md.
    (tmp_path / "results.md").write_text("# by hand\n")
    assert results_page.main(["--combine", str(tmp_path)]) == 2
    assert (tmp_path / "results.md").read_text() == "# by hand\n"


def _behaviour_report(folder: Path, f1: float, flips: float, extra: float | None = None, texts: str = "test.txt"):
    folder.mkdir(parents=True)
    report = {"meta": {"texts": texts}, "clean": {"f1_weighted": f1, "f1_macro": f1 - 0.1}, "extra_eval": {}}
    report["summary"] = {"clean_f1_weighted": f1, "typo_f1_weighted": f1 - 0.05, "typo_flip_rate": flips,
                         "mft_failure_rate": flips * 2, "negation_failure_rate": flips * 4}  # fmt: skip
    if extra is not None:  # as the suite writes it: the scores, and their summary
        report["extra_eval"]["reddit"] = {"f1_weighted": extra, "f1_macro": extra - 0.1}
        report["summary"] |= {"reddit_f1_weighted": extra, "reddit_f1_macro": extra - 0.1}
    (folder / "results.json").write_text(json.dumps(report))


def test_combine_writes_one_row_per_behaviour_report_and_each_arms_mean(tmp_path):
    from emotion_lab.tools import results_page

    _behaviour_report(tmp_path / "recipe_s100", 0.93, 0.1, extra=0.3)
    _behaviour_report(tmp_path / "recipe_s43", 0.91, 0.12, extra=0.4)
    _behaviour_report(tmp_path / "recipe_s44", 0.5, 0.5, extra=0.5, texts="val.txt")  # other texts: no mean with
    _behaviour_report(tmp_path / "noise_s42", 0.92, 0.004, extra=0.5)
    _behaviour_report(tmp_path / "noise_s43", 0.94, 0.006)  # scored without the extra set
    _behaviour_report(tmp_path / "noise_s42_no_spelling", 0.9, 0.07, extra=0.45)  # no seed: no arm
    assert results_page.main(["--combine", str(tmp_path)]) == 0
    rows = [line for line in (tmp_path / "results.md").read_text().splitlines() if line.startswith("| `")]
    assert rows == [
        "| `noise_s42` | 0.9200 / 0.8200 | 0.8700 / 0.40% | 0.80% / 1.60% | 0.5000 / 0.4000 |",
        "| `noise_s42_no_spelling` | 0.9000 / 0.8000 | 0.8500 / 7.00% | 14.00% / 28.00% | 0.4500 / 0.3500 |",
        "| `noise_s43` | 0.9400 / 0.8400 | 0.8900 / 0.60% | 1.20% / 2.40% | – / – |",
        "| `recipe_s100` | 0.9300 / 0.8300 | 0.8800 / 10.00% | 20.00% / 40.00% | 0.3000 / 0.2000 |",
        "| `recipe_s43` | 0.9100 / 0.8100 | 0.8600 / 12.00% | 24.00% / 48.00% | 0.4000 / 0.3000 |",
        "| `recipe_s44` | 0.5000 / 0.4000 | 0.4500 / 50.00% | 100.00% / 200.00% | 0.5000 / 0.4000 |",
        # An arm's mean is over its seeds on the same texts, and a set not every seed was scored on has none.
        "| `noise`: mean of seeds 42, 43 | 0.9300 / 0.8300 | 0.8800 / 0.50% | 1.00% / 2.00% | – / – |",
        "| `recipe`: mean of seeds 43, 100 | 0.9200 / 0.8200 | 0.8700 / 11.00% | 22.00% / 44.00% | 0.3500 / 0.2500 |",
    ]


def test_committed_combined_tables_are_their_files_output(tmp_path):
    import shutil

    from emotion_lab.tools import results_page
    from emotion_lab.utils.config import PROJECT_ROOT

    pages = [p for p in (PROJECT_ROOT / "docs" / "results").glob("*/*/results.md") if "--combine" in p.read_text()]
    assert pages  # the serving measurements at least
    for page in pages:
        copy = shutil.copytree(page.parent, tmp_path / page.parent.name)
        generated = results_page.combine(copy).read_text()
        assert generated.split("\n", 1)[1] == page.read_text().split("\n", 1)[1], page  # below the header line


def test_evaluation_only_sets_do_not_decide_what_trains_and_absent_files_are_skipped(tmp_path, caplog):
    here = tmp_path / "dev.txt"
    here.write_text("i feel fine;joy\n")
    assert extra_eval_overrides({"here": str(here), "gone": str(tmp_path / "gone.txt")}) == [
        f"+data.extra_eval.here={here}"
    ]
    assert "evaluation-only set gone" in caplog.text
    assert what_trains(["seed=1", f"+data.extra_eval.here={here}", "data.extra_eval={}", "data.dir=x"]) == [
        "seed=1",
        "data.dir=x",
    ]


def test_a_column_only_some_seeds_have_says_so():
    runs = [
        {"test/f1_weighted": 0.9, "seed": s, "behaviour/typo_flip_rate": 0.05 if s == 2 else None} for s in (1, 2, 3)
    ]
    for run in runs:
        run.update({f"test_f1/{label}": 0.9 for label in LABELS} | {"train_seconds": 60, "sentences_per_s": 100,
                   "test/f1_macro": 0.8})  # fmt: skip
        if run["behaviour/typo_flip_rate"] is None:
            del run["behaviour/typo_flip_rate"]
    (row,) = summarise({"recipe": runs})
    assert row["behaviour/typo_flip_rate_n"] == 1 and row["test/f1_weighted_n"] == 3
    line = markdown([row]).splitlines()[2]
    assert "| 5.00% (1 of 3 seeds) |" in line and "| – |" in line  # one seed's flip rate; nothing invented
