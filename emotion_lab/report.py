"""Reports on finished runs: Markdown with tables and figures.

    python -m emotion_lab.report RUN_DIR                       # RUN_DIR/report.md, with the run's figures
    python -m emotion_lab.report RUN_A RUN_B ... --out DIR     # side by side: DIR/report.md
    python -m emotion_lab.report MULTIRUN_DIR                  # a sweep: trials, optimisation history, importances

A run folder is what `train` or `evaluate` leaves (metrics.json, figures/, checkpoints/, .hydra/ or a
benchmark's result.json). Its report shows every figure in figures/: the ones RunFigures draws first, then
any other a callback wrote there, by name, captioned from its file name. Several runs get one chart of
every run's per-class F1 and one table of test metrics with the overrides that tell them apart. A
multirun folder (trial folders 0/, 1/, ...) gets the trials' table, Optuna's plots of the objective per
complete trial with the best so far and of the hyperparameters' importances (its random-forest
evaluator over the sweep's stored study, or over the trials' overrides and metrics for a sweep without
one, such as a grid). A folder without metrics, or without a checkpoint, gets one line naming what is
missing. The stored study is read as sweep_report reads it: read-only, only inside the sweep folder
unless `--storage URL` names it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from emotion_lab.errors import UserInputError
from emotion_lab.labels import LABELS
from emotion_lab.reporting import figures
from emotion_lab.reporting.sweeps import (
    DEFAULT_OBJECTIVE,
    STORAGE_HELP,
    collect,
    folder_study,
    importance_evaluator,
    read_study,
    shared_overrides,
    study_importances,
    sweep_objective,
    to_markdown,
    trial_params,
)
from emotion_lab.utils.atomic import write_text
from emotion_lab.utils.config import PROJECT_ROOT
from emotion_lab.utils.records import markdown_table, md_escape

# The figures RunFigures writes (file names without suffix) in the order a reader wants them, with their
# captions; other figures in figures/ follow them, by name.
RUN_FIGURES = {
    "figures/f1_by_class": "F1 by emotion, beside the reference build",
    "figures/precision_recall_f1": "Precision, recall and F1 per emotion",
    "figures/confusion_matrix": "Confusion matrix (rows: true emotion)",
    "figures/reliability": "Reliability before and after temperature scaling",
    "figures/class_distribution": "Emotions per split",
    "attention_words": "Attention over the words of one test sentence per emotion",
    "attribution_words": "Attribution of the same words to the predicted emotion (integrated gradients)",
}
# One file per figure, the first of these it was saved as: images Markdown shows, then PDF (linked).
FIGURE_SUFFIXES = (".png", ".svg", ".jpg", ".jpeg", ".gif", ".webp", ".pdf")


@dataclass
class Run:
    path: Path
    name: str
    metrics: dict[str, Any]
    overrides: list[str] = field(default_factory=list)


def is_multirun(path: Path) -> bool:
    """A sweep's folder: Hydra's multirun.yaml, or numbered trial folders."""
    return (path / "multirun.yaml").is_file() or any(p.is_dir() and p.name.isdigit() for p in path.iterdir())


def read_overrides(path: Path) -> list[str]:
    """The overrides a run was launched with: Hydra's record, else the benchmark's."""
    hydra = path / ".hydra" / "overrides.yaml"
    if hydra.is_file():
        return [str(o) for o in OmegaConf.load(hydra)]
    result = path / "result.json"
    if result.is_file():
        return list(json.loads(result.read_text()).get("overrides", []))
    return []


def read_run(path: Path) -> tuple[Run | None, list[str]]:
    """A run folder's metrics and overrides, and one line for each thing it lacks. No metrics or no test
    metrics: no Run (nothing to report); no checkpoint: a Run, with the line."""
    if not path.is_dir():
        return None, [f"{path}: not a folder"]
    metrics_file, metrics, problems = path / "metrics.json", None, []
    if not metrics_file.is_file():
        problems.append(
            f"{path}: no metrics.json: the run did not finish (resume it with ckpt_path=last, or run "
            "python -m emotion_lab.evaluate ckpt_path=<its checkpoint>)"
        )
    else:
        try:
            metrics = json.loads(metrics_file.read_text())
        except json.JSONDecodeError as err:
            problems.append(f"{metrics_file}: not JSON ({err.msg}, line {err.lineno})")
    # An evaluate folder names the checkpoint it tested; a training run keeps its own.
    if metrics is not None and not isinstance(metrics, dict):
        metrics, problems = None, [*problems, f"{metrics_file}: not a JSON object of metrics"]
    evaluated = Path(metrics["ckpt_path"]) if metrics and metrics.get("ckpt_path") else None
    if evaluated is not None and not evaluated.is_file():
        problems.append(f"{path}: its checkpoint {evaluated} is missing: it cannot be evaluated or exported again")
    elif evaluated is None and not any((path / "checkpoints").glob("*.ckpt")):
        problems.append(f"{path}: no checkpoint in {path / 'checkpoints'}: it cannot be evaluated or exported again")
    if metrics is None:
        return None, problems
    if "test/f1_weighted" not in metrics:
        return None, [
            f"{metrics_file}: no test metrics (trained with test=false?); run python -m emotion_lab.evaluate "
            "ckpt_path=<its checkpoint>",
            *problems,
        ]
    return Run(path, run_name(path), metrics, read_overrides(path)), problems


def run_name(path: Path) -> str:
    """`<task>/<time>` for a training run (outputs/<task>/runs/<time>), else `<parent>/<folder>`
    (a benchmark's `<row>/seed<N>`)."""
    parent = path.resolve().parent
    return f"{parent.parent.name}/{path.name}" if parent.name == "runs" else f"{parent.name}/{path.name}"


def _fmt(value: Any, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def metrics_rows(run: Run) -> list[list[str]]:
    m = run.metrics
    minutes = m.get("train_seconds")
    return [
        ["test weighted F1", _fmt(m.get("test/f1_weighted"))],
        ["test macro F1", _fmt(m.get("test/f1_macro"))],
        ["test accuracy", _fmt(m.get("test/acc"))],
        ["validation weighted F1 (selected epoch)", _fmt(m.get("val/f1_weighted_best"))],
        ["test ECE: raw -> temperature-scaled", f"{_fmt(m.get('test/ece'))} -> {_fmt(m.get('test/ece_calibrated'))}"],
        ["test NLL: raw -> temperature-scaled", f"{_fmt(m.get('test/nll'))} -> {_fmt(m.get('test/nll_calibrated'))}"],
        ["temperature", _fmt(m.get("val/temperature"))],
        ["epochs", _fmt(m.get("epochs"))],
        ["train minutes", _fmt(minutes / 60 if minutes is not None else None, 1)],
    ]


def per_class_rows(run: Run) -> list[list[str]]:
    m = run.metrics
    return [
        [label, *(_fmt(m.get(f"test_{kind}/{label}")) for kind in ("precision", "recall", "f1"))] for label in LABELS
    ]


def figure_files(folder: Path) -> dict[str, Path]:
    """Each figure in `folder` (its file name without suffix) -> its file, in the first of FIGURE_SUFFIXES
    it was saved as."""
    if not folder.is_dir():
        return {}
    files = [p for p in folder.iterdir() if p.suffix.lower() in FIGURE_SUFFIXES and p.is_file()]
    found: dict[str, Path] = {}
    for file in sorted(files, key=lambda p: FIGURE_SUFFIXES.index(p.suffix.lower())):
        if not file.name.startswith("."):
            found.setdefault(file.stem, file)
    return found


def run_figures(path: Path) -> list[tuple[Path, str]]:
    """A run's figure files with their captions: RUN_FIGURES in their order, then every other figure in
    figures/ by name, captioned from its file name."""
    in_figures = figure_files(path / "figures")
    files = figure_files(path) | {f"figures/{stem}": file for stem, file in in_figures.items()}
    known = [(files[key], caption) for key, caption in RUN_FIGURES.items() if key in files]
    others = [
        (file, stem.replace("_", " ").replace("-", " ").capitalize())
        for stem, file in sorted(in_figures.items())
        if f"figures/{stem}" not in RUN_FIGURES
    ]
    return known + others


def figure_lines(file: Path, caption: str, out: Path) -> list[str]:
    """A figure as Markdown: shown inline, or linked where Markdown cannot show its format (PDF)."""
    link = os.path.relpath(file, out)
    shown = f"[{caption} (PDF)]({link})" if file.suffix.lower() == ".pdf" else f"![{caption}]({link})"
    return [f"### {caption}", "", shown, ""]


def single_run_report(run: Run, out: Path) -> str:
    lines = [f"# {run.name}", "", f"Overrides: `{' '.join(run.overrides) or '(none)'}`", ""]
    lines += ["## Test metrics", "", markdown_table(["metric", "value"], metrics_rows(run))]
    lines += [
        "## Per emotion (test)",
        "",
        markdown_table(["emotion", "precision", "recall", "F1"], per_class_rows(run)),
    ]
    report = run.path / "test_report.json"
    if report.is_file():
        costly = json.loads(report.read_text()).get("costly_confusions", [])
        if costly:
            lines += ["## Confusions that cost the most weighted F1", ""]
            rows = [[c["true"], c["predicted"], str(c["count"]), f"{c['f1_weighted_cost']:.4f}"] for c in costly]
            lines += [markdown_table(["true", "predicted", "sentences", "weighted F1 lost"], rows)]
            lines += ["Examples: `test_report.txt`; the most confident mistakes per emotion: `errors.csv`.", ""]
    lines += behaviour_lines(run.path, out)
    drawn = run_figures(run.path)
    if drawn:
        lines += ["## Figures", ""]
        for file, caption in drawn:
            lines += figure_lines(file, caption, out)
    return "\n".join(lines)


def behaviour_lines(path: Path, out: Path) -> list[str]:
    """The behaviour suite's results for the run's model (`python -m emotion_lab.tools.behaviour
    <run>/model` writes them to <run>/behaviour/), as a table; nothing when it has not run."""
    file = path / "behaviour" / "results.json"
    if not file.is_file():
        return []
    try:
        report = json.loads(file.read_text())
        rows = [
            [md_escape(t["name"]), md_escape(t["kind"]), str(int(t["cases"])), _pct(t["failure_rate"]),
             _num(t.get("f1_weighted"))]
            for t in report["tests"]
        ]  # fmt: skip
        extra = [
            [md_escape(name), _num(s["f1_weighted"]), _num(s["f1_macro"])]
            for name, s in report.get("extra_eval", {}).items()
        ]
        clean = _num(report["clean"]["f1_weighted"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        return ["## Behaviour", "", f"{file}: not the behaviour suite's results ({type(err).__name__})", ""]
    lines = ["## Behaviour", "", f"Weighted F1 as written: {clean}.", ""]
    lines += [markdown_table(["test", "kind", "cases", "failure rate", "weighted F1"], rows)]
    if extra:
        lines += ["Evaluation-only sets:", "", markdown_table(["set", "weighted F1", "macro F1"], extra)]
    lines += [
        f"Failures and what each test checks: [behaviour/results.md]({os.path.relpath(file.with_suffix('.md'), out)}).",
        "",
    ]
    return lines


def _num(value: float | None) -> str:
    """A number read from a file: a number, or a ValueError (never the file's own text)."""
    return "–" if value is None else f"{float(value):.4f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * float(value):.2f}%"


def comparison_report(runs: list[Run], out: Path) -> str:
    names = unique_names(runs)
    shared = shared_overrides([{"overrides": r.overrides} for r in runs])
    chart = figures.f1_bars_runs(
        {
            name: {label: r.metrics.get(f"test_f1/{label}", float("nan")) for label in LABELS}
            for name, r in zip(names, runs)
        },
        f"Test F1 by emotion: {len(runs)} runs",
    )
    figures.save(chart, out / "f1_by_class_runs")
    head = ["run", "overrides", "test F1 w", "test F1 macro", "val F1 w", "test ECE (calibrated)", "train min"]
    rows = []
    for name, run in zip(names, runs):
        m, seconds = run.metrics, run.metrics.get("train_seconds")
        own = " ".join(o for o in run.overrides if o not in shared)
        rows.append(
            [
                name,
                f"`{own}`" if own else "",
                _fmt(m.get("test/f1_weighted")),
                _fmt(m.get("test/f1_macro")),
                _fmt(m.get("val/f1_weighted_best")),
                _fmt(m.get("test/ece_calibrated")),
                _fmt(seconds / 60 if seconds is not None else None, 1),
            ]
        )
    per_class = [
        [name, *(_fmt(r.metrics.get(f"test_f1/{label}"), 3) for label in LABELS)] for name, r in zip(names, runs)
    ]
    lines = [f"# {len(runs)} runs side by side", ""]
    if shared:
        lines += [f"Every run: `{' '.join(shared)}`", ""]
    lines += ["## Test metrics", "", markdown_table(head, rows)]
    lines += ["## Test F1 by emotion", "", "![Test F1 by emotion](f1_by_class_runs.png)", ""]
    lines += [markdown_table(["run", *LABELS], per_class)]
    return "\n".join(lines)


def unique_names(runs: list[Run]) -> list[str]:
    """Run names, made unique with a number where two folders share one."""
    names = [r.name for r in runs]
    return [n if names.count(n) == 1 else f"{n} ({i + 1})" for i, n in enumerate(names)]


def sweep_report(folder: Path, out: Path, study: Any) -> str:
    """`study`: the sweep's stored study (read_study), or None."""
    ranked = collect(folder, study)  # best first; the history wants launch order
    rows = sorted(ranked, key=lambda r: r["trial"])
    trials = sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    metric = sweep_objective(trials[0]) if trials else DEFAULT_OBJECTIVE
    values, pruned = [], []
    for row in rows:
        metrics_file = folder / str(row["trial"]) / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        values.append(metrics.get(metric) if row["status"] == "ok" else None)
        pruned.append(row["status"].startswith("pruned"))
    counts = ", ".join(
        f"{n} {label}"
        for label, n in (
            ("complete", sum(v is not None for v in values)),
            ("pruned", sum(pruned)),
            ("failed or unfinished", sum(v is None and not p for v, p in zip(values, pruned))),
        )
        if n
    )
    lines = [f"# Sweep {folder.name}", "", f"{len(rows)} trials ({counts}); objective `{metric}` (maximised).", ""]
    if any(v is not None for v in values):
        history = figures.optimisation_history(
            folder_study(values, pruned), f"{folder.name}: {metric} per complete trial", metric
        )
        figures.save(history, out / "history")
        lines += ["## Optimisation history", "", "![Optimisation history](history.png)", ""]
    else:
        lines += ["No trial completed: no optimisation history.", ""]
    importance_study = study if study is not None else folder_study(values, pruned, trial_params(rows))
    found = study_importances(importance_study)
    if found:
        title = f"{folder.name}: hyperparameter importances"
        figures.save(
            figures.param_importances(importance_study, title, importance_evaluator(), metric), out / "importances"
        )
        lines += ["## Hyperparameter importances", "", "![Importances](importances.png)", ""]
        lines += [markdown_table(["hyperparameter", "importance"], [[k, f"{v:.3f}"] for k, v in found.items()])]
    else:
        lines += ["Importances need at least two complete trials with a hyperparameter that varies.", ""]
    lines += ["## Trials, best first", "", to_markdown(ranked)]
    return "\n".join(lines)


def default_out(paths: list[Path]) -> Path:
    if len(paths) == 1:
        return paths[0]
    return Path(PROJECT_ROOT) / "outputs" / "reports" / f"{datetime.now():%Y-%m-%d_%H-%M-%S}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emotion_lab.report",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders, or one multirun (sweep) folder")
    parser.add_argument(
        "--out",
        type=Path,
        help="where report.md goes (default: the run or sweep folder itself; outputs/reports/<time> for several runs)",
    )
    parser.add_argument("--storage", metavar="URL", help=STORAGE_HELP)
    args = parser.parse_args(argv)
    out = args.out or default_out(args.runs)
    if len(args.runs) == 1 and args.runs[0].is_dir() and is_multirun(args.runs[0]):
        try:
            study = read_study(args.runs[0], args.storage)
        except UserInputError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if not collect(args.runs[0], study):
            print(f"error: {args.runs[0]}: a multirun folder without trial folders (0/, 1/, ...)", file=sys.stderr)
            return 2
        out.mkdir(parents=True, exist_ok=True)
        text = sweep_report(args.runs[0], out, study)
        problems = []
    elif args.storage:
        print(f"error: --storage {args.storage}: only for one sweep (multirun) folder", file=sys.stderr)
        return 2
    else:
        runs, problems = [], []
        for path in args.runs:
            run, missing = read_run(path)
            problems += missing
            if run is not None:
                runs.append(run)
        for line in problems:
            print(f"missing: {line}", file=sys.stderr)
        if not runs:
            print("error: no run to report on: none of the folders above has test metrics", file=sys.stderr)
            return 2
        out.mkdir(parents=True, exist_ok=True)
        text = single_run_report(runs[0], out) if len(runs) == 1 else comparison_report(runs, out)
    if problems:
        text += "\n## Missing\n\n" + "\n".join(f"- {line}" for line in problems) + "\n"
    write_text(out / "report.md", text)
    print(out / "report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
