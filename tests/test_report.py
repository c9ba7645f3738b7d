"""python -m emotion_lab.report: one run, runs side by side, a sweep, and folders that lack something."""

import json
import re
from pathlib import Path

import lightning as L
import matplotlib.image
import pytest
import torch
from matplotlib.figure import Figure
from omegaconf import open_dict

from emotion_lab.labels import LABELS
from emotion_lab.report import main
from emotion_lab.reporting.sweeps import importances
from emotion_lab.train import train
from tests.sweeps.test_study import no_connection  # noqa: F401 - a fixture


def linked_images(report: Path) -> list[Path]:
    return [report.parent / link for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.read_text())]


def assert_real_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(path)[..., :3].std() > 0.05  # not blank


class MeanProbabilities(L.Callback):
    """A callback of one's own, as report.py does not know it: after the test, writes the mean predicted
    probabilities per true emotion to `<output_dir>/figures/mean_probabilities.{png,pdf}`."""

    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)
        self.sums = torch.zeros(len(LABELS), len(LABELS))

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.sums.index_add_(0, outputs["targets"].cpu(), outputs["logits"].detach().float().cpu().softmax(-1))

    def on_test_end(self, trainer, pl_module) -> None:
        fig = Figure(figsize=(6, 5))
        ax = fig.subplots()
        ax.imshow((self.sums / self.sums.sum(1, keepdim=True).clamp(min=1e-9)).numpy(), cmap="viridis")
        (self.output_dir / "figures").mkdir(parents=True, exist_ok=True)
        for suffix in ("png", "pdf"):
            fig.savefig(self.output_dir / "figures" / f"mean_probabilities.{suffix}")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, data_dir, tiny_encoder):
    """Two tiny finished runs that differ in their loss: focal (the default) and cross-entropy. The focal
    one also has a callback of its own (MeanProbabilities), added in the config as a user would."""
    from tests.conftest import QUIET, compose_config, tiny_overrides

    runs = []
    for loss in ("focal", "ce"):
        out = tmp_path_factory.mktemp(f"run_{loss}")
        overrides = [
            *tiny_overrides(tiny_encoder, data_dir),
            "trainer.max_epochs=1",
            "trainer.num_sanity_val_steps=0",
            "export=false",
            f"loss={loss}",
            *QUIET,
        ]
        own = [
            f"+callbacks.mean_probabilities._target_={__name__}.MeanProbabilities",
            "+callbacks.mean_probabilities.output_dir=${paths.output_dir}",
        ]
        cfg = compose_config("train", [*overrides, *(own if loss == "focal" else [])], out)
        with open_dict(cfg):
            cfg.paths.output_dir = str(out)
        train(cfg)
        (out / ".hydra").mkdir()
        (out / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        runs.append(out)
    return runs


def test_one_run_gets_its_report_with_every_figure(two_runs, capsys):
    run = two_runs[0]
    assert main([str(run)]) == 0
    report = run / "report.md"
    text = report.read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"| test weighted F1 | {metrics['test/f1_weighted']:.4f} |" in text
    for label in LABELS:
        assert f"| {label} | {metrics[f'test_precision/{label}']:.4f} |" in text
    images = linked_images(report)
    assert {p.stem for p in images} >= {"f1_by_class", "confusion_matrix", "reliability", "attention_words"}
    assert "attribution_words" in {p.stem for p in images}
    for image in images:
        assert_real_png(image)
    assert "## Missing" not in text


def test_a_figure_a_callback_of_ones_own_writes_reaches_the_report(two_runs):
    run = two_runs[0]
    assert main([str(run)]) == 0
    text = (run / "report.md").read_text()
    shown = [p.relative_to(run).as_posix() for p in linked_images(run / "report.md")]
    assert shown[-3:] == ["attention_words.png", "attribution_words.png", "figures/mean_probabilities.png"]
    assert "### Mean probabilities\n\n![Mean probabilities](figures/mean_probabilities.png)" in text
    assert "mean_probabilities.pdf" not in text  # one format per figure
    assert not (two_runs[1] / "figures" / "mean_probabilities.png").exists()


def test_every_figure_in_the_folder_is_shown_once_known_ones_first(tmp_path):
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    (run / "metrics.json").write_text(json.dumps({"test/f1_weighted": 0.5}))
    files = ["f1_by_class.png", "f1_by_class.svg", "reliability.svg", "zeta-plot.pdf", "alpha_beta.pdf"]
    files += ["alpha_beta.svg", "alpha_beta.PNG", "notes.txt", ".hidden.png", "../attention_words.svg"]
    for name in files:
        (run / "figures" / name).write_bytes(b"drawn")
    assert main([str(run)]) == 0
    text = (run / "report.md").read_text()
    assert re.findall(r"\[([^\]]*)\]\(([^)]+)\)", text.split("## Figures")[1]) == [
        ("F1 by emotion, beside the reference build", "figures/f1_by_class.png"),
        ("Reliability before and after temperature scaling", "figures/reliability.svg"),
        ("Attention over the words of one test sentence per emotion", "attention_words.svg"),
        ("Alpha beta", "figures/alpha_beta.PNG"),
        ("Zeta plot (PDF)", "figures/zeta-plot.pdf"),  # a PDF is linked: Markdown cannot show it
    ]
    assert "![Zeta plot" not in text and "## Missing" not in text


def test_runs_side_by_side_share_one_chart_and_one_table(two_runs, tmp_path):
    out = tmp_path / "cmp"
    assert main([*map(str, two_runs), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "`loss=focal`" in text and "`loss=ce`" in text  # each run's own overrides
    assert "Every run:" in text and "trainer.max_epochs=1" in text.split("## Test metrics")[0]  # shared, once
    for run in two_runs:
        f1 = json.loads((run / "metrics.json").read_text())["test/f1_weighted"]
        assert f"| {f1:.4f} |" in text
    (chart,) = linked_images(out / "report.md")
    assert chart.name == "f1_by_class_runs.png"
    assert_real_png(chart)


def test_a_folder_without_metrics_or_checkpoint_is_named(two_runs, tmp_path, capsys):
    empty = tmp_path / "unfinished"
    empty.mkdir()
    assert main([str(empty)]) == 2
    err = capsys.readouterr().err
    assert f"{empty}: no metrics.json: the run did not finish" in err
    assert f"{empty}: no checkpoint in" in err and "error: no run to report on" in err

    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    (no_ckpt / "metrics.json").write_text((two_runs[0] / "metrics.json").read_text())
    assert main([str(no_ckpt), str(empty), "--out", str(tmp_path / "r")]) == 0
    missing = (tmp_path / "r" / "report.md").read_text().split("## Missing")[1]
    assert f"{no_ckpt}: no checkpoint" in missing and f"{empty}: no metrics.json" in missing


def test_an_evaluate_folder_is_judged_by_the_checkpoint_it_names(two_runs, tmp_path):
    evaluated = tmp_path / "eval"
    evaluated.mkdir()
    metrics = json.loads((two_runs[0] / "metrics.json").read_text())
    ckpt = next((two_runs[0] / "checkpoints").glob("*.ckpt"))
    (evaluated / "metrics.json").write_text(json.dumps({"ckpt_path": str(ckpt), **metrics}))
    assert main([str(evaluated)]) == 0
    assert "## Missing" not in (evaluated / "report.md").read_text()
    (evaluated / "metrics.json").write_text(json.dumps({"ckpt_path": str(tmp_path / "gone.ckpt"), **metrics}))
    assert main([str(evaluated)]) == 0
    assert f"its checkpoint {tmp_path / 'gone.ckpt'} is missing" in (evaluated / "report.md").read_text()


def test_a_run_is_named_by_its_task_and_time(tmp_path):
    from emotion_lab.report import run_name

    assert run_name(tmp_path / "outputs" / "best_cpu" / "runs" / "2026-11-27_10-00") == "best_cpu/2026-11-27_10-00"
    assert run_name(tmp_path / "bench" / "hybrid" / "seed42") == "hybrid/seed42"


def test_a_multirun_folder_without_trials_is_one_line(tmp_path, capsys):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "multirun.yaml").write_text("hydra: {}\n")
    assert main([str(tmp_path / "sweep")]) == 2
    assert "a multirun folder without trial folders" in capsys.readouterr().err


def fake_sweep(folder: Path) -> list[float | None]:
    """8 trials whose objective follows model.optimizer.lr only; pooling varies but does not matter;
    trial 3 failed."""
    values = []
    for trial in range(8):
        lr = 1e-4 * (trial + 1)
        pooling = ["mean", "max"][trial % 2]
        value = None if trial == 3 else 0.80 + 100 * lr
        (folder / str(trial) / ".hydra").mkdir(parents=True)
        overrides = ["experiment=cached_head", f"model.optimizer.lr={lr}", f"model.net.pooling={pooling}"]
        (folder / str(trial) / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        (folder / str(trial) / ".hydra" / "config.yaml").write_text("optimized_metric: val/f1_weighted_best\n")
        metrics = {"status": "failed: diverged"} if value is None else {"status": "ok", "val/f1_weighted_best": value}
        (folder / str(trial) / "metrics.json").write_text(json.dumps(metrics))
        values.append(value)
    return values


def test_a_sweep_gets_history_importances_and_its_trials(tmp_path):
    sweep = tmp_path / "multirun"
    fake_sweep(sweep)
    assert main([str(sweep)]) == 0
    text = (sweep / "report.md").read_text()
    assert "8 trials (7 complete, 1 failed or unfinished); objective `val/f1_weighted_best`" in text
    assert {p.name for p in linked_images(sweep / "report.md")} == {"history.png", "importances.png"}
    for image in linked_images(sweep / "report.md"):
        assert_real_png(image)
    rows = dict(re.findall(r"\| (model\.[\w.]+) \| ([0-9.]+) \|", text))
    assert float(rows["model.optimizer.lr"]) > float(rows["model.net.pooling"])
    assert "failed: diverged" in text  # the failed trial is listed, not dropped


def test_importances_follow_the_parameter_that_moves_the_objective():
    params = [{"lr": str(i), "pooling": ["mean", "max"][i % 2]} for i in range(10)]
    values = [0.5 + 0.01 * i for i in range(10)]
    found = importances(params, values)
    assert found["lr"] > 0.8 > found["pooling"]
    assert importances(params[:1], values[:1]) == {}  # one trial: nothing to compare


def test_nothing_committed_under_docs_quotes_the_datasets_sentences():
    """Run outputs that quote test sentences (word figures, errors.csv, test reports with examples) are
    never published into docs/."""
    from emotion_lab.utils.config import PROJECT_ROOT

    docs = Path(PROJECT_ROOT) / "docs"
    quoting = [*docs.glob("**/attention_words*"), *docs.glob("**/attribution_words*"), *docs.glob("**/errors.csv")]
    quoting += [p for p in docs.glob("**/test_report.*") if "examples" in p.read_text(encoding="utf-8")]
    assert quoting == []


@pytest.mark.usefixtures("no_connection")
def test_a_sweep_whose_study_yaml_names_a_database_is_reported_without_it(tmp_path, capsys):
    sweep = tmp_path / "multirun"
    fake_sweep(sweep)
    url = "postgresql://user:secret@db.invalid:5432/studies"
    (sweep / "study.yaml").write_text(json.dumps({"study_name": "head", "storage": url}))
    assert main([str(sweep)]) == 0
    (line,) = capsys.readouterr().err.splitlines()
    shown = url.replace(":secret@", ":***@")  # the password is never printed
    assert line.startswith(f"note: {sweep}/study.yaml: its study storage {shown} lies outside the sweep folder")
    assert "secret" not in line
    assert "## Hyperparameter importances" in (sweep / "report.md").read_text()  # from the trial folders


def test_storage_is_refused_for_run_folders(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main([str(tmp_path / "run"), "--storage", "sqlite:///study.db", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == "error: --storage sqlite:///study.db: only for one sweep (multirun) folder\n"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
