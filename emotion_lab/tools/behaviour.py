"""The behaviour suite of a saved model: how it answers text written unlike its training data.

    python -m emotion_lab.tools.behaviour MODEL [--extra-eval NAME=FILE ...] [--seed 0] [--out DIR]

Invariance under typos, case, punctuation, @mentions, links, hashtags, emoji, contractions and first
names; an intensifier that must not lower the predicted label; sentences written for the suite (the
emotion said without "i feel", negation, contrast: emotion_lab/robustness/templates.tsv, or your own
with --templates); evaluation-only sets scored as they are (e.g. goemotions6's dev comments). A model
with a spelling step reads every sentence through it (`--no-spelling`: as written); a perturbed sentence
counts as a case by what its tokens would be as written, so rates compare across models. Writes
results.json and results.md to --out (default: `<run>/behaviour` for a run's `model` folder, where
`python -m emotion_lab.report <run>` shows it; else outputs/behaviour/<model folder name>).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from emotion_lab.data.sources import read_labelled_file, test_split
from emotion_lab.errors import UserInputError
from emotion_lab.inference.options import add_model_options, load_model
from emotion_lab.robustness.perturb import vocabulary_words
from emotion_lab.robustness.suite import TEMPLATES, markdown, read_templates, run_suite
from emotion_lab.utils.records import provenance, run_record, save_results

RESULTS_DIR = "behaviour"  # inside a run folder


def default_out(model: Path) -> Path:
    """`<run>/behaviour` for a run's exported `model` folder, else outputs/behaviour/<folder name>."""
    run = model.resolve().parent
    if model.name == "model" and (run / ".hydra").is_dir():
        return run / RESULTS_DIR
    return Path("outputs") / RESULTS_DIR / model.resolve().name


def labelled_file(path: Path) -> tuple[list[str], list[int]]:
    rows = read_labelled_file(path)
    return rows.texts, rows.labels


def extra_eval_option(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{value!r}: expected NAME=FILE (a `text;label` file)")
    return name, Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emotion_lab.tools.behaviour", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a saved model folder (or a Lightning checkpoint)")
    add_model_options(parser)
    parser.add_argument(
        "--texts",
        type=Path,
        help="a `text;label` file the invariance tests perturb (default: the test split, found as training finds it)",
    )
    parser.add_argument("--data-dir", help="a folder with test.txt (default: as training finds it)")
    parser.add_argument(
        "--templates", type=Path, default=TEMPLATES, help="minimum-functionality sentences (test, expect, text)"
    )
    parser.add_argument(
        "--extra-eval",
        type=extra_eval_option,
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="an evaluation-only `text;label` file scored as it is (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds every perturbation (per sentence)")
    parser.add_argument("--limit", type=int, help="the first N labelled sentences only (a quick look)")
    parser.add_argument("--examples", type=int, default=5, help="failures kept per test")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, help="where results.json and results.md go")
    args = parser.parse_args(argv)
    code = provenance()
    try:
        predictor = load_model(args)
        labels = list(predictor.labels)
        templates = read_templates(args.templates, labels)
        if args.texts is not None:
            texts, gold = labelled_file(args.texts)
            source = str(args.texts)
        else:
            texts, gold, source = test_split(args.data_dir)
        extra = {name: labelled_file(path) for name, path in args.extra_eval}
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.limit:
        texts, gold = texts[: args.limit], gold[: args.limit]

    def predict_proba(batch):
        predictions = predictor.predict(list(batch), batch_size=args.batch_size)
        return np.array([[p.probs[label] for label in labels] for p in predictions], dtype=np.float64)

    def encode(text):
        return predictor.tokenizer(text, truncation=True, max_length=predictor.max_length)["input_ids"]

    report = run_suite(predict_proba, labels, texts, gold, templates, seed=args.seed, examples=args.examples,
                       extra_eval=extra, encode=encode, known=vocabulary_words(predictor.tokenizer))  # fmt: skip
    meta = run_record("behaviour", argv, code, ("torch", "transformers", "onnxruntime"))
    meta |= {"model": str(args.model), "backend": predictor.backend.name, "texts": source,
             "templates": str(args.templates)}  # fmt: skip
    meta["spelling_words"] = len(predictor.spelling.counts) if predictor.spelling is not None else 0
    out = args.out or default_out(args.model)
    out.mkdir(parents=True, exist_ok=True)
    save_results(out, {"meta": meta, **report}, markdown(report, f"{args.model} ({predictor.backend.name})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
