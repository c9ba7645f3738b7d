"""What a head epoch on cached encoder states costs: width, batch size, length grouping, LSTM kernel,
precision, threads.

    python -m emotion_lab.tools.bench_head [--hidden 256 512] [--batch-sizes 32 64 128 256] [--lstm-impl padded packed]
                                     [--precision 32 bf16] [--threads 1 2]

Trains the BiLSTM-attention head (focal loss, AdamW) on about `--sentences` training sentences,
batched exactly as a sweep trial batches them, and projects the epoch time over the whole training
split. The timed batches are spread evenly over the epoch: length-grouped sampling puts the longest
batch first, so the first batches alone would overstate the cost. Needs the feature cache (built on
first use, ~1 minute). Writes `<out>/results.md` and `results.json`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import hydra
import torch

from emotion_lab.data.datamodule import EmotionDataModule
from emotion_lab.encoders.loading import DEFAULT_ENCODER
from emotion_lab.models.losses import FocalLoss
from emotion_lab.models.networks import LSTM_IMPLS, BiLSTMAttentionNet
from emotion_lab.utils.atomic import write_text
from emotion_lab.utils.config import PROJECT_ROOT, compose_train


def time_head(
    datamodule: EmotionDataModule,
    hidden: int,
    batch_size: int,
    group_by_length: bool,
    lstm_impl: str,
    precision: str,
    threads: int,
    sentences: int,
) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    datamodule.hparams.batch_size = batch_size
    datamodule.hparams.group_by_length = group_by_length
    # Only the head runs on the cached states: the encoder's pretrained weights are never read.
    net = BiLSTMAttentionNet(
        datamodule.hparams.tokenizer_name,
        lstm_hidden=hidden,
        attn_heads=4,
        lstm_impl=lstm_impl,
        freeze_encoder=True,
        pretrained=False,
    ).train()
    optimizer = torch.optim.AdamW(net.head_parameters(), lr=1e-3, fused=True)  # as in training
    loss_fn = FocalLoss(gamma=2.0)
    loader = datamodule.train_dataloader()
    stride = max(1, len(loader) * batch_size // sentences)
    seen, padded, real, seconds = 0, 0, 0, 0.0
    for step, batch in enumerate(loader):
        if step % stride:
            continue
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = loss_fn(net.head(batch["hidden"], batch["attention_mask"]), batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 0:  # the first step allocates and warms up kernels
            continue
        seconds += time.perf_counter() - started
        seen += len(batch["labels"])
        padded += batch["attention_mask"].numel()
        real += int(batch["attention_mask"].sum())
    rate = seen / seconds if seen else float("nan")  # a single batch is only the warm-up
    return {
        "lstm_hidden": hidden,
        "batch_size": batch_size,
        "group_by_length": group_by_length,
        "lstm_impl": lstm_impl,
        "precision": precision,
        "threads": threads,
        "sentences_per_s": round(rate, 1),
        "epoch_s": round(len(datamodule.cached["train"]) / rate, 1),
        "padding": round(1 - real / padded, 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--group-by-length", choices=["on", "off", "both"], default="on")
    parser.add_argument("--lstm-impl", nargs="+", default=["padded"], choices=LSTM_IMPLS)
    parser.add_argument("--precision", nargs="+", default=["32"], choices=["32", "bf16"])
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--sentences", type=int, default=3000, help="training sentences timed per setting")
    parser.add_argument("--encoder", default=DEFAULT_ENCODER)
    parser.add_argument("--cache-dir", default=None, help="default: the training config's data.feature_cache.dir")
    parser.add_argument("--data-dir", default=None, help="default: the training config's data search order")
    parser.add_argument("--out", default=str(PROJECT_ROOT / "outputs" / "bench_head"))
    args = parser.parse_args(argv)

    # The data and cache come from the training config, so sources and cache keys match a real trial.
    overrides = [f"model.net.encoder_name={args.encoder}", "data.feature_cache.enabled=true"]
    overrides += [f"data.dir={args.data_dir}"] if args.data_dir else []
    overrides += [f"data.feature_cache.dir={args.cache_dir}"] if args.cache_dir else []
    datamodule: EmotionDataModule = hydra.utils.instantiate(compose_train(overrides, Path(args.out)).data)
    datamodule.setup("fit")
    grouping = {"on": [True], "off": [False], "both": [True, False]}[args.group_by_length]
    rows = []
    settings = itertools.product(args.hidden, args.batch_sizes, grouping, args.lstm_impl, args.precision, args.threads)
    for hidden, batch_size, group, impl, precision, threads in settings:
        rows.append(time_head(datamodule, hidden, batch_size, group, impl, precision, threads, args.sentences))
        print(json.dumps(rows[-1]), flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "results.json", json.dumps(rows, indent=2))
    header = "| lstm_hidden | batch | length-grouped | LSTM | precision | threads | sentences/s | epoch s | padding |"
    lines = [header, "|---|---|---|---|---|---|---|---|---|"] + [
        f"| {r['lstm_hidden']} | {r['batch_size']} | {'yes' if r['group_by_length'] else 'no'} | {r['lstm_impl']} "
        f"| {r['precision']} | {r['threads']} "
        f"| {r['sentences_per_s']} | {r['epoch_s']} | {r['padding']:.1%} |"
        for r in rows
    ]
    write_text(out / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
