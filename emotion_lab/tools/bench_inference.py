"""CPU inference speed of a saved model, side by side with a transformers pipeline (a benchmark, not a test).

    python -m emotion_lab.tools.bench_inference MODEL [--threads 1 2] [--latency-n 300] [--out DIR]

Measures, in one process on the same test sentences, for each thread count:
- single-sentence latency p50 / p95 (one call per sentence, as the interactive loop and a server do),
- batch throughput (sentences/s over the whole test split, batches of `--batch-size`),
- test weighted / macro F1 of each variant, so a speed-up's accuracy cost is visible,
- both speeds as a ratio to the pipeline's (p50 ratio: lower is better; throughput ratio: higher),
- where one sentence's time goes in the torch fp32 network (tokenizer, encoder, head, the head's BiLSTM).
Variants: emotion_lab on torch fp32 and int8 (dynamic quantization), on onnxruntime fp32 and int8
(the folder's ONNX files; exported to `--out` first when the folder has none), and a `transformers`
text-classification pipeline over the same backbone with a linear head (untrained: there for speed
only). Writes results.md and results.json with the CPU model, thread counts and versions.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from sklearn.metrics import f1_score

from emotion_lab.data.sources import test_split
from emotion_lab.inference.predictor import ONNX_FILE, ONNX_INT8_FILE, EmotionPredictor
from emotion_lab.labels import LABEL2ID
from emotion_lab.utils.records import markdown_table, provenance, run_record, save_results

PIPELINE = "transformers pipeline (same backbone, linear head)"


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
    fn(texts[:64])  # warm-up: first-call allocations are not throughput
    start = time.perf_counter()
    labels = fn(texts)
    return len(texts) / (time.perf_counter() - start), labels


def _scores(labels: list[str], gold: list[int]) -> dict[str, float]:
    pred = [LABEL2ID.get(label, -1) for label in labels]
    return {"f1_weighted": f1_score(gold, pred, average="weighted"), "f1_macro": f1_score(gold, pred, average="macro")}


def bench_predictor(predictor: EmotionPredictor, texts, gold, latency_n: int, batch_size: int) -> dict:
    p50, p95 = _latency_ms(predictor, texts[:latency_n])
    rate, labels = _throughput(lambda t: [p.label for p in predictor.predict(t, batch_size=batch_size)], texts)
    speed = {"p50_ms": p50, "p95_ms": p95, "sentences_per_s": rate}
    return {"variant": f"emotion_lab {predictor.backend.name}", **speed, **_scores(labels, gold)}


def bench_pipeline(model_dir: Path, texts, latency_n: int, batch_size: int) -> dict:
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, pipeline

    from emotion_lab.encoders.loading import downloads_refused, load_encoder_config, load_tokenizer

    # The folder's sizes checked against its weights, and its own files only, refused if they name code.
    EmotionPredictor.from_pretrained(model_dir, backend="torch")
    with downloads_refused():
        config = load_encoder_config(str(model_dir / "encoder"))
        tokenizer = load_tokenizer(str(model_dir))
    config.num_labels = 6
    model = AutoModelForSequenceClassification.from_config(config, trust_remote_code=False)
    # The same backbone weights as the emotion_lab model; only the (untrained) linear head differs.
    weights = load_file(model_dir / "model.safetensors")
    encoder_state = {k.removeprefix("encoder."): v for k, v in weights.items() if k.startswith("encoder.")}
    getattr(model, model.base_model_prefix).load_state_dict(encoder_state, strict=False)
    classify = pipeline(
        "text-classification",
        model=model.eval(),
        tokenizer=tokenizer,
        device=-1,
        top_k=None,
        truncation=True,
        max_length=128,
    )
    p50, p95 = _latency_ms(classify, texts[:latency_n])
    rate, _ = _throughput(lambda t: classify(t, batch_size=batch_size), texts)
    return {"variant": PIPELINE, "p50_ms": p50, "p95_ms": p95, "sentences_per_s": rate}


def stage_breakdown(predictor: EmotionPredictor, texts: list[str]) -> dict[str, float]:
    """Median milliseconds per single sentence of each stage of the torch fp32 network: where the time goes."""
    from emotion_lab.models.bilstm import run_bilstm

    net, tokenizer = predictor.net, predictor.tokenizer
    batches = [tokenizer([t], truncation=True, max_length=predictor.max_length, return_tensors="pt") for t in texts]
    with torch.inference_mode():
        encoded = [net.encode(b["input_ids"], b["attention_mask"]) for b in batches]
        stages = {
            "tokenizer": _latency_ms(lambda t: tokenizer([t], return_tensors="pt"), texts)[0],
            "encoder": _latency_ms(lambda b: net.encode(b["input_ids"], b["attention_mask"]), batches)[0],
            "head": _latency_ms(lambda hm: net.head(*hm), encoded)[0],
        }
        if getattr(net, "lstm", None) is not None:
            bilstm = _latency_ms(lambda hm: run_bilstm(net.lstm, hm[0], hm[1].sum(1)), encoded)
            stages["head: BiLSTM"] = bilstm[0]
        stages["whole predictor call"] = _latency_ms(predictor, texts)[0]
    return stages


def with_onnx(model_dir: Path, out: Path) -> Path:
    """The model folder if it has its ONNX files, else a copy with them exported into `out`."""
    if (model_dir / ONNX_FILE).is_file() and (model_dir / ONNX_INT8_FILE).is_file():
        return model_dir
    from emotion_lab.inference.export import export

    return export(model_dir, out / "model", onnx=True)


VARIANTS = (("torch", False), ("torch", True), ("onnx", False), ("onnx", True))


def markdown(rows: list[dict]) -> str:
    header = ["variant", "threads", "p50 ms", "p95 ms", "p50 / pipeline", "sentences/s", "throughput / pipeline"]
    header += ["test weighted F1", "test macro F1"]
    cells = []
    for r in rows:
        f1w = f"{r['f1_weighted']:.4f}" if r.get("f1_weighted") is not None else "n/a (untrained head)"
        f1m = f"{r['f1_macro']:.4f}" if r.get("f1_macro") is not None else "n/a"
        speed = [f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}", f"{r['p50_vs_pipeline']:.2f}x"]
        speed += [f"{r['sentences_per_s']:.0f}", f"{r['throughput_vs_pipeline']:.2f}x"]
        cells.append([r["variant"], str(r["threads"]), *speed, f1w, f1m])
    return markdown_table(header, cells)


def breakdown_table(stages: dict[str, float], threads: int) -> str:
    header = [f"torch fp32, one sentence, {threads} threads: stage", "p50 ms"]
    return markdown_table(header, [[name, f"{ms:.2f}"] for name, ms in stages.items()])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a saved model folder")
    parser.add_argument("--latency-n", type=int, default=300, help="sentences timed one by one")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, torch.get_num_threads()],
        help="intra-op thread counts to try (default: 1 and all)",
    )
    parser.add_argument("--data-dir", default=None, help="a folder with test.txt (default: as training finds it)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_inference"))
    args = parser.parse_args(argv)
    code = provenance()  # the code as it was when the measurement started

    texts, gold, source = test_split(args.data_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = with_onnx(args.model, args.out)
    rows = []
    for threads in dict.fromkeys(args.threads):
        torch.set_num_threads(threads)
        baseline = {**bench_pipeline(args.model, texts, args.latency_n, args.batch_size), "threads": threads}
        for backend, int8 in VARIANTS:
            predictor = EmotionPredictor.from_pretrained(model_dir, backend=backend, int8=int8)
            row = bench_predictor(predictor, texts, gold, args.latency_n, args.batch_size)
            rows.append({**row, "threads": threads})
            if (backend, int8) == ("torch", False):
                reference = predictor  # torch fp32: the one the stage breakdown times
        rows.append(baseline)
        for row in rows:
            if row["threads"] == threads:
                row["p50_vs_pipeline"] = row["p50_ms"] / baseline["p50_ms"]
                row["throughput_vs_pipeline"] = row["sentences_per_s"] / baseline["sentences_per_s"]

    torch.set_num_threads(max(args.threads))
    breakdown = stage_breakdown(reference, texts[: args.latency_n])
    meta = run_record("bench_inference", argv, code, ("torch", "transformers", "onnxruntime", "tokenizers"))
    meta |= {
        "model": str(args.model),
        "data": source,
        "sentences": len(texts),
        "latency_n": args.latency_n,
        "batch_size": args.batch_size,
    }
    table = markdown(rows) + "\n" + breakdown_table(breakdown, max(args.threads))
    save_results(args.out, {"meta": meta, "rows": rows, "torch_fp32_stages_ms": breakdown}, table)


if __name__ == "__main__":
    main()
