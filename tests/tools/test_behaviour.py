"""python -m emotion_lab.tools.behaviour: a run's model folder gets its suite, the run's report shows it,
and what it cannot read is one line."""

from __future__ import annotations

import json
import shutil

import pytest

from emotion_lab.report import main as report
from emotion_lab.robustness.perturb import PERTURBATIONS
from emotion_lab.tools.behaviour import main


@pytest.fixture(scope="module")
def run_with_suite(tmp_path_factory, trained, data_dir):
    run = tmp_path_factory.mktemp("behaviour") / "run"
    shutil.copytree(trained["out"], run)
    (run / ".hydra").mkdir(exist_ok=True)
    (run / ".hydra" / "overrides.yaml").write_text("- trainer.max_epochs=1\n")
    args = [str(run / "model"), "--data-dir", str(data_dir), "--extra-eval", f"ood={data_dir / 'val.txt'}"]
    assert main(args) == 0
    return run


def test_a_run_model_gets_the_suite_in_its_run_folder(run_with_suite):
    results = json.loads((run_with_suite / "behaviour" / "results.json").read_text())
    metrics = json.loads((run_with_suite / "metrics.json").read_text())
    # The suite's clean score is the run's own test score: same sentences, same labels, same order.
    assert results["clean"]["f1_weighted"] == pytest.approx(metrics["test/f1_weighted"], abs=1e-6)
    for label, recall in results["clean"]["recall"].items():  # per label: a swapped label order shows here
        assert recall == pytest.approx(metrics[f"test_recall/{label}"], abs=1e-6), label
    assert results["clean"]["sentences"] == 24 and results["meta"]["backend"] == "torch fp32"
    names = [t["name"] for t in results["tests"]]
    assert names == [*PERTURBATIONS, "intensifier", "no_frame", "negation", "contrast"]
    assert set(results["summary"]) == {
        "clean_f1_weighted", "typo_f1_weighted", "typo_flip_rate", "mft_failure_rate", "negation_failure_rate",
        "ood_f1_weighted", "ood_f1_macro",
    }  # fmt: skip
    assert results["extra_eval"]["ood"]["sentences"] == 24
    assert (run_with_suite / "behaviour" / "results.md").read_text().startswith("# Behaviour: ")


def test_the_run_report_shows_the_suite(run_with_suite):
    assert report([str(run_with_suite)]) == 0
    text = (run_with_suite / "report.md").read_text()
    typo = next(t for t in json.loads((run_with_suite / "behaviour" / "results.json").read_text())["tests"]
                if t["name"] == "typo")  # fmt: skip
    assert "## Behaviour" in text
    assert f"| typo | invariance | {typo['cases']} | {100 * typo['failure_rate']:.2f}% |" in text
    assert "](behaviour/results.md)" in text and "| ood |" in text


@pytest.mark.parametrize(
    ("make_args", "problem"),
    [
        (lambda tmp, model, data: [str(tmp / "nowhere")], "nowhere"),
        (lambda tmp, model, data: [model, "--texts", str(tmp / "none.txt")], "none.txt: no such file"),
        (lambda tmp, model, data: [model, "--templates", str(tmp / "t.tsv")], "t.tsv:2: label 'disgust'"),
        (lambda tmp, model, data: [model, "--extra-eval", f"x={data / 'nope.txt'}"], "nope.txt: no such file"),
    ],
)
def test_what_it_cannot_read_is_one_line_and_exit_2(tmp_path, trained, data_dir, capsys, make_args, problem):
    (tmp_path / "t.tsv").write_text("test\texpect\ttext\nno_frame\tdisgust\tugh\n")
    code = main([*make_args(tmp_path, str(trained["model"]), data_dir), "--data-dir", str(data_dir), "--out",
                 str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and problem in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "content",
    ['{"tests": []}', '{"clean": {"f1_weighted": "<script>"}, "tests": []}', "[1, 2", '{"tests": [{"name": 1}]}'],
)
def test_a_broken_results_file_is_one_line_in_the_report(run_with_suite, tmp_path, content):
    run = tmp_path / "run"
    shutil.copytree(run_with_suite, run)
    (run / "behaviour" / "results.json").write_text(content)
    assert report([str(run)]) == 0
    text = (run / "report.md").read_text()
    assert "results.json: not the behaviour suite's results" in text and "<script>" not in text
