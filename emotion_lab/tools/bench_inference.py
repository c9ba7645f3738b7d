"""CPU inference speed of a saved model, side by side with a transformers pipeline (a benchmark, not a test).

    python -m emotion_lab.tools.bench_inference MODEL [--latency-n 300] [--out outputs/bench_inference]

Measures, in one process on the same test sentences:
- single-sentence latency p50 / p95 (one call per sentence, as the interactive loop does),
- batch throughput (sentences/s over the whole test split),
- test weighted / macro F1 of each variant, so a speed-up's accuracy cost is visible.
Variants: the emotion_lab predictor (fp32), the same with int8 dynamic quantization, and a
`transformers` text-classification pipeline over the same backbone with a linear head (its head
is untrained: it is there for speed only). Writes a Markdown table and JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from sklearn.metrics import f1_score

from emotion_lab.data.labels import LABEL2ID
from emotion_lab.data.sources import load_splits
from emotion_lab.inference.predictor import EmotionPredictor
from emotion_lab.utils.config import PROJECT_ROOT


def _latency_ms(fn, texts: list[str], warmup: int = 20) -> tuple[float, float]:
    for text in texts[:warmup]:
        fn(text)
    times = []
    for text in texts:
        start = time.perf_counter()
        fn(text)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def _throughput(fn, texts: list[str]) -> tuple[float, list[str]]:
    start = time.perf_counter()
    labels = fn(texts)
    return len(texts) / (time.perf_counter() - start), labels


def _scores(labels: list[str], gold: list[int]) -> dict[str, float]:
    pred = [LABEL2ID.get(label, -1) for label in labels]
    return {"f1_weighted": f1_score(gold, pred, average="weighted"), "f1_macro": f1_score(gold, pred, average="macro")}


def bench_predictor(name: str, predictor: EmotionPredictor, texts, gold, latency_n: int, batch_size: int) -> dict:
    p50, p95 = _latency_ms(predictor, texts[:latency_n])
    rate, labels = _throughput(lambda t: [p.label for p in predictor.predict(t, batch_size=batch_size)], texts)
    return {"variant": name, "p50_ms": p50, "p95_ms": p95, "sentences_per_s": rate, **_scores(labels, gold)}


def bench_pipeline(model_dir: Path, texts, latency_n: int, batch_size: int) -> dict:
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, pipeline

    weights = model_dir / "model.safetensors"
    model = AutoModelForSequenceClassification.from_config(
        AutoConfig.from_pretrained(model_dir / "encoder", num_labels=6)
    )
    # The same backbone weights as the emotion_lab model; only the (untrained) linear head differs.
    encoder_state = {k.removeprefix("encoder."): v for k, v in load_file(weights).items() if k.startswith("encoder.")}
    getattr(model, model.base_model_prefix).load_state_dict(encoder_state, strict=False)
    classify = pipeline(
        "text-classification",
        model=model.eval(),
        tokenizer=AutoTokenizer.from_pretrained(model_dir),
        device=-1,
        top_k=None,
        truncation=True,
        max_length=128,
    )
    p50, p95 = _latency_ms(classify, texts[:latency_n])
    rate, _ = _throughput(lambda t: classify(t, batch_size=batch_size), texts)
    return {
        "variant": "transformers pipeline (same backbone, linear head)",
        "p50_ms": p50,
        "p95_ms": p95,
        "sentences_per_s": rate,
        "f1_weighted": None,
        "f1_macro": None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a saved model folder")
    parser.add_argument("--latency-n", type=int, default=300, help="sentences timed one by one")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, torch.get_num_threads()],
        help="torch intra-op thread counts to try (default: 1 and all)",
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_inference"))
    args = parser.parse_args()

    splits, source = load_splits(fallback_dirs=[PROJECT_ROOT.parent / "shared" / "data" / "emotion"])
    texts, gold = list(splits["test"]["text"]), list(splits["test"]["label"])
    rows = []
    for threads in dict.fromkeys(args.threads):
        torch.set_num_threads(threads)
        fp32 = EmotionPredictor.from_pretrained(args.model)
        int8 = EmotionPredictor.from_pretrained(args.model).quantize_dynamic()
        for name, predictor in (("emotion_lab fp32", fp32), ("emotion_lab int8 dynamic", int8)):
            row = bench_predictor(name, predictor, texts, gold, args.latency_n, args.batch_size)
            rows.append({**row, "threads": threads})
        rows.append({**bench_pipeline(args.model, texts, args.latency_n, args.batch_size), "threads": threads})

    meta = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "model": str(args.model),
        "data": source,
        "sentences": len(texts),
        "latency_n": args.latency_n,
        "batch_size": args.batch_size,
    }
    table = [
        "| variant | threads | p50 ms | p95 ms | sentences/s | test weighted F1 | test macro F1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f1w = f"{r['f1_weighted']:.4f}" if r["f1_weighted"] is not None else "n/a (untrained head)"
        f1m = f"{r['f1_macro']:.4f}" if r["f1_macro"] is not None else "n/a"
        speed = f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['sentences_per_s']:.0f}"
        table.append(f"| {r['variant']} | {r['threads']} | {speed} | {f1w} | {f1m} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (args.out / "results.md").write_text("\n".join(table) + "\n")
    print(json.dumps(meta))
    print("\n".join(table))


if __name__ == "__main__":
    main()
