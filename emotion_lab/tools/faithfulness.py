"""How faithful are a model's word explanations? Delete the words they rank highest and watch the prediction.

    python -m emotion_lab.tools.faithfulness MODEL [--n 500] [--k 1 3] [--draws 5] [--seed 0] [--out DIR]

For each of the first --n test sentences (with at least max(k) + 1 words): the predicted label's
probability with the top-k words deleted, the words ranked by integrated gradients
(`EmotionPredictor.explain`), by the attention they received (`word_attention`), and at random (the
mean of --draws draws). A faithful ranking makes the probability fall most. All predictions use the
fp32 torch network the attributions are computed on. It also times each explanation (the cost of one
sentence's attributions on this machine). Writes results.json and results.md to --out (default
outputs/faithfulness/<model folder name>).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from emotion_lab.data.sources import test_split
from emotion_lab.errors import UserInputError
from emotion_lab.inference.explain import METHOD
from emotion_lab.inference.options import add_model_options, load_model
from emotion_lab.utils.records import markdown_table, provenance, run_record, save_results


def delete_words(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` without the characters of `spans`, its spaces collapsed."""
    kept, at = [], 0
    for start, end in sorted(spans):
        kept.append(text[at:start])
        at = end
    kept.append(text[at:])
    return " ".join("".join(kept).split())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emotion_lab.tools.faithfulness", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("model", type=Path, help="a saved model folder (or a Lightning checkpoint)")
    add_model_options(parser)
    parser.add_argument("--data-dir", help="a folder with test.txt (default: as training finds it)")
    parser.add_argument("--n", type=int, default=500, help="test sentences (the first ones long enough)")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 3], help="words deleted")
    parser.add_argument("--draws", type=int, default=5, help="random deletions averaged per sentence")
    parser.add_argument("--steps", type=int, default=32, help="integrated gradients' points on the path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="where results.json and results.md go")
    args = parser.parse_args(argv)
    if args.n < 1 or args.draws < 1 or args.steps < 2 or min(args.k) < 1:
        parser.error("--n, --draws and every --k must be >= 1, --steps >= 2")
    code = provenance()
    try:
        predictor = load_model(args)
        texts, _, source = test_split(args.data_dir)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    torch_predictor = predictor if predictor.net is not None and predictor.backend.name == "torch fp32" else None
    if torch_predictor is None:  # attributions are the fp32 network's: so are the probabilities they are judged by
        from emotion_lab.inference.predictor import EmotionPredictor

        torch_predictor = EmotionPredictor.from_pretrained(
            predictor.source, predictor.trusted_modules, spelling=predictor.spelling is not None
        )
    labels = list(torch_predictor.labels)
    rng = random.Random(args.seed)
    need = max(args.k) + 1
    drops = {(method, k): [] for method in ("attribution", "attention", "random") for k in args.k}
    used, seconds = 0, []
    for text in texts:
        if used == args.n:
            break
        text = torch_predictor.read([text])[0]  # word spans and deletions are those of the text as read
        started = time.perf_counter()
        explanation = torch_predictor.explain([text], steps=args.steps)[0]
        took = time.perf_counter() - started
        if len(explanation.words) < need:
            continue
        used += 1
        seconds.append(took)
        attention = torch_predictor.word_attention([text])[0]
        label = labels.index(explanation.label)
        spans = [(w.start, w.end) for w in explanation.words]
        by_attribution = sorted(range(len(spans)), key=lambda i: -explanation.words[i].score)
        by_attention = sorted(range(len(spans)), key=lambda i: -attention.weights[i])
        variants = []
        for k in args.k:
            variants.append(("attribution", k, by_attribution[:k]))
            variants.append(("attention", k, by_attention[:k]))
            variants += [("random", k, rng.sample(range(len(spans)), k)) for _ in range(args.draws)]
        deleted = [delete_words(text, [spans[i] for i in chosen]) for _, _, chosen in variants]
        probs = [p.probs[labels[label]] for p in torch_predictor.predict(deleted)]
        per_variant: dict[tuple[str, int], list[float]] = {}
        for (method, k, _), prob in zip(variants, probs):
            per_variant.setdefault((method, k), []).append(explanation.prob - prob)
        for key, values in per_variant.items():
            drops[key].append(float(np.mean(values)))
    if used == 0:
        print(f"error: no test sentence has {need} words or more", file=sys.stderr)
        return 2
    rows = {f"{method} top-{k}": {"mean_drop": float(np.mean(v)), "sem": float(np.std(v, ddof=1) / np.sqrt(len(v)))
            if len(v) > 1 else 0.0} for (method, k), v in drops.items()}  # fmt: skip
    meta = run_record("faithfulness", argv, code, ("torch", "transformers", "captum"))
    meta |= {"model": str(args.model), "texts": source, "sentences": used, "method": METHOD, "steps": args.steps}
    # The first explanation builds the explainer: the cost of one is the median, not the mean.
    cost = {"p50_ms": 1000 * float(np.median(seconds)), "p90_ms": 1000 * float(np.percentile(seconds, 90))}
    cost["threads"] = torch.get_num_threads()
    table = [[name, f"{r['mean_drop']:.4f}", f"{r['sem']:.4f}"] for name, r in rows.items()]
    md = (
        f"# Faithfulness of word explanations: {args.model}\n\n"
        f"Fall in the predicted label's probability when the top-k words are deleted, mean over {used} test "
        "sentences (random: the mean of "
        f"{args.draws} draws per sentence); larger is more faithful.\n\n"
        + markdown_table(["words deleted", "mean fall", "standard error"], table)
        + f"\nOne explanation ({args.steps} steps, {cost['threads']} threads): p50 {cost['p50_ms']:.0f} ms, "
        f"p90 {cost['p90_ms']:.0f} ms per sentence.\n"
    )
    out = args.out or Path("outputs") / "faithfulness" / args.model.resolve().name
    out.mkdir(parents=True, exist_ok=True)
    save_results(out, {"meta": meta, "results": rows, "explanation_cost": cost}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
