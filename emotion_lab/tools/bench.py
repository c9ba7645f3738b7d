"""The emotion benchmark, side by side: baselines, emotion_lab's recipe and its ablations.

    python -m emotion_lab.tools.bench                       # every row of emotion_lab/conf/bench.yaml, seeds 42 43 44
    python -m emotion_lab.tools.bench --rows hybrid,no_lstm --seeds 42
    python -m emotion_lab.tools.bench --quick               # a tiny version (the tests run it)
    python -m emotion_lab.tools.bench --out outputs/bench/full   # again: finishes what a stopped run left
    python -m emotion_lab.tools.bench --rows hybrid,finetune --publish  # and commit the table under docs/results/

Rows: (a) TF-IDF + linear SVM (scikit-learn, C chosen on validation); (b) the plain fine-tune;
(c) the default recipe; (d) its ablations. Every row is chosen on validation only and tested once.
For each row: test weighted F1, macro F1, per-class F1 (mean and std over seeds), train wall time
and inference sentences/s. Each run leaves its own result.json beside its logs, and results.md and
results.json in --out are rewritten after every run from all finished runs there whose overrides
match emotion_lab/conf/bench.yaml today. A rerun with the same --out reuses a finished (row, seed) and trains
the rest, so a table that takes hours can be built over several sittings, a few rows at a time.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from emotion_lab.data.sources import load_splits
from emotion_lab.data.teacher_logits import TeacherLogits, TeacherLogitsError
from emotion_lab.errors import UserInputError
from emotion_lab.labels import LABELS
from emotion_lab.tools.results_page import publish
from emotion_lab.utils.atomic import write_text
from emotion_lab.utils.config import CONFIG_DIR, PROJECT_ROOT, compose_train, repo_relative, require_checkout
from emotion_lab.utils.records import provenance

log = logging.getLogger("emotion_lab.tools.bench")


class BenchConfigError(UserInputError, ValueError):
    """A benchmark row that would select models on something other than validation, or a bad option."""


def check_validation_only(name: str, cfg: DictConfig) -> None:
    """Model selection (checkpoint choice, early stopping) must look at validation metrics only."""
    for callback in ("model_checkpoint", "early_stopping"):
        monitor = (cfg.get("callbacks") or {}).get(callback, {}) or {}
        monitor = monitor.get("monitor")
        if monitor is not None and not str(monitor).startswith("val/"):
            raise BenchConfigError(f"row {name!r}: callbacks.{callback}.monitor={monitor!r} is not a validation metric")
    if not cfg.get("test", True):
        raise BenchConfigError(f"row {name!r}: test=false; the benchmark tests every row once")


def check_teacher_logits(data: DictConfig) -> None:
    """A row that distils must have teacher logits made on the training split it will see."""
    if not data.get("teacher_logits"):
        return
    train = load_splits(data.dir, data.fallback_dirs, data.hub_id, data.on_bad_line, data.limit_per_split)[0]["train"]
    TeacherLogits.load(data.teacher_logits).for_split("train", train["text"], train["label"], data.teacher_logits)


def run_svm(data: DictConfig, settings: DictConfig, limit: int | None) -> dict[str, Any]:
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.metrics import f1_score
        from sklearn.svm import LinearSVC
    except ImportError as err:
        raise BenchConfigError(
            f"the TF-IDF + SVM baseline needs scikit-learn: pip install scikit-learn ({err})"
        ) from None
    splits, _ = load_splits(data.dir, data.fallback_dirs, data.hub_id)
    if limit:
        splits = {k: v.select(range(min(limit, len(v)))) for k, v in splits.items()}
    train, val, test = (splits[s] for s in ("train", "validation", "test"))
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=tuple(settings.ngram_range), sublinear_tf=True)
    x_train = vectorizer.fit_transform(train["text"])
    best = max(
        ((c, LinearSVC(C=c).fit(x_train, train["label"])) for c in settings.C_grid),
        key=lambda cm: f1_score(val["label"], cm[1].predict(vectorizer.transform(val["text"])), average="weighted"),
    )
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    pred = best[1].predict(vectorizer.transform(test["text"]))
    infer = len(test) / (time.perf_counter() - start)
    per_class = f1_score(test["label"], pred, average=None, labels=list(range(len(LABELS))))
    return {
        "test/f1_weighted": f1_score(test["label"], pred, average="weighted"),
        "test/f1_macro": f1_score(test["label"], pred, average="macro"),
        **{f"test_f1/{label}": float(v) for label, v in zip(LABELS, per_class)},
        "train_seconds": train_seconds,
        "sentences_per_s": infer,
        "chosen": f"C={best[0]}",
        "provenance": provenance(),
    }


def seed_overrides(overrides: list[str], seed: int) -> list[str]:
    return [*overrides, f"seed={seed}", "export=false"]


# Overrides that change where logs go, what the console shows or which sets are scored after the test,
# never what is trained.
NOT_TRAINING = ("paths.log_dir", "trainer.enable_progress_bar", "callbacks.progress_bar", "data.extra_eval")


def what_trains(overrides: list[str]) -> list[str]:
    """The overrides that decide a run's result: a run made with another log folder or progress bar counts."""
    keys = (o.partition("=")[0].lstrip("+~") for o in overrides)
    return [o for o, key in zip(overrides, keys) if not any(key == n or key.startswith(n + ".") for n in NOT_TRAINING)]


def extra_eval_overrides(sets: dict[str, str]) -> list[str]:
    """`+data.extra_eval.<name>=<file>` for each evaluation-only set of bench.yaml whose file is here."""
    overrides = []
    for name, file in sets.items():
        resolved = file.replace("${paths.root_dir}", str(PROJECT_ROOT))
        if Path(resolved).is_file():
            overrides.append(f"+data.extra_eval.{name}={file}")
        else:
            log.warning("evaluation-only set %s: %s is not here; the table leaves its columns empty", name, resolved)
    return overrides


def saved_result(out: Path, name: str, overrides: list[str], seed: int) -> dict[str, Any] | None:
    """A finished run's metrics, if it was trained with exactly these overrides."""
    saved = out / name / f"seed{seed}" / "result.json"
    if not saved.is_file():
        return None
    try:
        earlier = json.loads(saved.read_text())
    except ValueError:  # unreadable: treated as unfinished, so the run is set aside and trained again
        log.warning("%s is not valid JSON; the run counts as unfinished", saved)
        return None
    if what_trains(earlier.get("overrides", [])) != what_trains(seed_overrides(overrides, seed)):
        return None
    return {**earlier["metrics"], "overrides": earlier["overrides"], "provenance": earlier.get("provenance")}


def run_row(name: str, overrides: list[str], seed: int, out: Path) -> None:
    """Train and test one (row, seed) into <out>/<row>/seed<N>, unless that run is already done."""
    from emotion_lab.train import train

    if saved_result(out, name, overrides, seed) is not None:
        log.info("%s seed %d: finished earlier with the same overrides, reused", name, seed)
        return
    run_dir = out / name / f"seed{seed}"
    if run_dir.exists():  # unfinished, or run with other overrides: kept aside, never mixed in
        aside = run_dir.with_name(f"{run_dir.name}.replaced-{datetime.now():%Y%m%d-%H%M%S}")
        log.info("%s seed %d: %s is unfinished or stale; moved to %s", name, seed, run_dir, aside.name)
        run_dir.rename(aside)
    cfg = compose_train(seed_overrides(overrides, seed), run_dir)
    check_validation_only(name, cfg)
    metrics, objects = train(cfg)
    n_test = len(objects["datamodule"].datasets["test"])
    metrics = {**metrics, "sentences_per_s": n_test / metrics["test_seconds"]}
    try:
        suite = behaviour(objects["trainer"], objects["model"], objects["datamodule"], run_dir)
        metrics |= {f"behaviour/{k}": v for k, v in suite.items()}
    except Exception as err:  # the trained run is kept; its robustness columns stay empty
        log.warning("%s seed %d: the behaviour suite failed (%s: %s)", name, seed, type(err).__name__, err)
    result = {"overrides": seed_overrides(overrides, seed), "metrics": metrics, "provenance": provenance()}
    # Written whole and renamed into place: a run stopped while writing never looks finished.
    write_text(run_dir / "result.json", json.dumps(result, indent=2))


def behaviour(trainer, model, datamodule, run_dir: Path) -> dict[str, Any]:
    """The behaviour suite on the tested weights, over the test split (as the model read it, through its
    spelling step if it has one), on the test's device and precision; the report goes to <run>/behaviour/
    (the run's report shows it), its summary into the row."""
    import numpy as np
    import torch

    from emotion_lab.robustness.perturb import vocabulary_words
    from emotion_lab.robustness.suite import TEMPLATES, markdown, read_templates, run_suite

    temperature = model.calibration_temperature or 1.0
    spelling = getattr(datamodule, "spelling", None)  # a DataModule of your own may have none
    model.eval().to(trainer.strategy.root_device)

    @torch.inference_mode()
    def predict_proba(texts):
        if spelling is not None:  # perturbed sentences are read as the saved model reads them
            texts = list(map(spelling, texts))
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        probs = np.zeros((len(texts), len(LABELS)))
        for start in range(0, len(order), 128):
            index = order[start : start + 128]
            batch = datamodule.tokenizer([texts[i] for i in index], truncation=True, max_length=datamodule.max_length,
                                         padding=True, return_tensors="pt")  # fmt: skip
            with trainer.precision_plugin.test_step_context():  # the test's autocast, if any
                logits = model(batch["input_ids"].to(model.device), batch["attention_mask"].to(model.device))
            probs[index] = (logits.float() / temperature).softmax(-1).cpu().numpy()
        return probs

    def encode(text):
        return datamodule.tokenizer(text, truncation=True, max_length=datamodule.max_length)["input_ids"]

    texts, gold = map(list, zip(*datamodule.eval_examples("test")))
    report = run_suite(predict_proba, LABELS, texts, gold, read_templates(TEMPLATES, LABELS), encode=encode,
                       known=vocabulary_words(datamodule.tokenizer))  # fmt: skip
    write_text(run_dir / "behaviour" / "results.json", json.dumps(report, indent=2))
    write_text(run_dir / "behaviour" / "results.md", markdown(report, f"{run_dir.parent.name}/{run_dir.name}"))
    return {k: v for k, v in report["summary"].items() if k != "clean_f1_weighted"}


def finished_runs(out: Path, rows: dict[str, list[str]]) -> dict[str, list[dict[str, Any]]]:
    """Every finished run under `out` whose overrides match its row's overrides today, by seed."""
    runs = {}
    for name, overrides in rows.items():
        folders = (p.parent.name.removeprefix("seed") for p in (out / name).glob("seed*/result.json"))
        seeds = sorted(int(seed) for seed in folders if seed.isdigit())
        found = [(seed, saved_result(out, name, overrides, seed)) for seed in seeds]
        if finished := [{**metrics, "seed": seed} for seed, metrics in found if metrics is not None]:
            runs[name] = finished
    return runs


ROBUSTNESS = ("behaviour/typo_f1_weighted", "behaviour/typo_flip_rate", "behaviour/mft_failure_rate",
              "behaviour/negation_failure_rate")  # fmt: skip


def extra_sets(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The evaluation-only sets any run was scored on, by name."""
    keys = {k for runs in results.values() for r in runs for k in r if k.startswith("extra/")}
    return sorted({k.split("/")[1] for k in keys if k.endswith("/f1_weighted")})


def summarise(results: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    extra = [f"extra/{name}/{kind}" for name in extra_sets(results) for kind in ("f1_weighted", "f1_macro")]
    keys = [
        "test/f1_weighted",
        "test/f1_macro",
        *(f"test_f1/{label}" for label in LABELS),
        "train_seconds",
        "sentences_per_s",
        *ROBUSTNESS,
        *extra,
    ]
    rows = []
    for name, runs in results.items():
        row: dict[str, Any] = {"row": name, "seeds": len(runs), "seed_list": [r["seed"] for r in runs if "seed" in r]}
        for key in keys:
            values = [r[key] for r in runs if key in r]
            row[key] = statistics.fmean(values) if values else None
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            row[f"{key}_n"] = len(values)  # fewer than seeds where older runs lack the key
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table: scores, speed, then robustness (one typo per test sentence: weighted F1 and labels flipped;
    the suite's written sentences failed; each evaluation-only set's weighted / macro F1). A row whose
    runs predate a column shows "–" there."""
    extra = sorted({k.split("/")[1] for r in rows for k in r if k.startswith("extra/") and r[k] is not None})
    head = ["row", "seeds", "test weighted F1", "test macro F1", *LABELS, "train min", "infer sent/s",
            "one typo: weighted F1", "one typo: flipped", "written tests failed", "negation failed",
            *(f"{name} weighted / macro F1" for name in extra)]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def some(r: dict[str, Any], key: str) -> str:
        n = r.get(f"{key}_n", r["seeds"])
        return f" ({n} of {r['seeds']} seeds)" if n < r["seeds"] else ""

    def pm(r: dict[str, Any], key: str) -> str:
        if r.get(key) is None:
            return "–"
        spread = f" ± {r[key + '_std']:.4f}" if r.get(f"{key}_n", r["seeds"]) > 1 else ""
        return f"{r[key]:.4f}{spread}{some(r, key)}"

    def pct(r: dict[str, Any], key: str) -> str:
        return "–" if r.get(key) is None else f"{100 * r[key]:.2f}%{some(r, key)}"

    def num(r: dict[str, Any], key: str) -> str:
        return "–" if r.get(key) is None else f"{r[key]:.3f}{some(r, key)}"

    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                [
                    r["row"],
                    ", ".join(map(str, r["seed_list"])) or "-",
                    pm(r, "test/f1_weighted"),
                    pm(r, "test/f1_macro"),
                    *(f"{r[f'test_f1/{label}']:.3f}" for label in LABELS),
                    f"{r['train_seconds'] / 60:.1f}",
                    f"{r['sentences_per_s']:.0f}",
                    pm(r, "behaviour/typo_f1_weighted"),
                    pct(r, "behaviour/typo_flip_rate"),
                    pct(r, "behaviour/mft_failure_rate"),
                    pct(r, "behaviour/negation_failure_rate"),
                    *(f"{num(r, f'extra/{name}/f1_weighted')} / {num(r, f'extra/{name}/f1_macro')}" for name in extra),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--rows", help="comma-separated subset of emotion_lab/conf/bench.yaml rows (svm always runs)")
    parser.add_argument("--quick", action="store_true", help="tiny data slices and one epoch: checks the pipeline")
    parser.add_argument("--out", type=Path, help="default: outputs/bench/<time>")
    parser.add_argument(
        "--publish",
        action="store_true",
        help="when done, copy the table into docs/results/<date>_<commit>/ and regenerate docs/results.md",
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every trained row, e.g. data.dir=...")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")

    bench = OmegaConf.load(Path(CONFIG_DIR) / "bench.yaml")
    quick = list(bench.quick) if args.quick else []

    extra_eval = extra_eval_overrides(dict(bench.get("extra_eval") or {}))

    def row_overrides(overrides) -> list[str]:
        # --quick and the command line come last: they win over a row's own budget.
        return [*bench.recipe, *overrides, *quick, *extra_eval, *args.overrides]

    all_rows = {name: row_overrides(overrides) for name, overrides in bench.rows.items()}
    selected = list(all_rows)
    if args.rows:
        unknown = set(args.rows.split(",")) - set(all_rows)
        if unknown:
            parser.error(f"--rows: unknown {sorted(unknown)}; allowed: {', '.join(all_rows)}")
        selected = [name for name in all_rows if name in args.rows.split(",")]

    out = args.out or PROJECT_ROOT / "outputs" / "bench" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    try:
        if args.publish:  # known before hours of training, not after
            require_checkout("docs/results")
        out.mkdir(parents=True, exist_ok=True)
        # Validate every row before the first minute of training is spent.
        for name in list(selected):
            cfg = compose_train(all_rows[name], out)
            check_validation_only(name, cfg)
            try:
                check_teacher_logits(cfg.data)
            except TeacherLogitsError as err:
                if not args.quick:
                    raise BenchConfigError(f"row {name!r}: {err}") from None
                log.warning("row %s skipped: --quick trains on slices its teacher logits were not made on", name)
                selected.remove(name)
        data = compose_train(row_overrides([]), out).data
        meta = {
            **provenance(),
            "command": "python -m emotion_lab.tools.bench " + " ".join(argv if argv is not None else sys.argv[1:]),
            "recipe": row_overrides([]),
            "requested_seeds": args.seeds,
        }
        svm = {"tfidf_svm": [run_svm(data, bench.svm, 96 if args.quick else None)]}
        write_results(out, meta, {**svm, **finished_runs(out, all_rows)})
        for name in selected:
            for seed in args.seeds:
                run_row(name, all_rows[name], seed, out)
                write_results(out, meta, {**svm, **finished_runs(out, all_rows)})
    except UserInputError as err:
        log.error("%s", err)
        return 2
    print((out / "results.md").read_text())
    log.info("results: %s", out)
    if args.publish:
        log.info("published: %s", publish(out))
    return 0


def write_results(out: Path, meta: dict[str, Any], results: dict[str, list[dict[str, Any]]]) -> None:
    """The table so far: a stopped benchmark leaves every finished row behind."""
    summary = summarise(results)
    table = {"meta": meta, "rows": summary, "runs": results}
    write_text(out / "results.json", repo_relative(json.dumps(table, indent=2, default=str)))
    write_text(out / "results.md", repo_relative(markdown(summary)))


if __name__ == "__main__":
    raise SystemExit(main())
