"""Predict emotions: an interactive loop, or batch files and pipes.

    python -m emotion_lab.predict MODEL                    # type a sentence, see its emotion; exit/quit/Ctrl-D ends
    python -m emotion_lab.predict MODEL --explain          # ... and which words moved it (integrated gradients)
    python -m emotion_lab.predict MODEL --input texts.txt --output preds.csv
    python -m emotion_lab.predict MODEL --input data.jsonl --text-column sentence --output preds.jsonl
    cat texts.txt | python -m emotion_lab.predict MODEL --input - --format jsonl

MODEL is a saved model folder (`python -m emotion_lab.export`, or `<run>/model` after training) or
a Lightning checkpoint. Without `--input` the loop reads stdin: bars per class on a terminal, one
plain tab-separated line per input otherwise. With `--input` (a .txt file with one sentence a line,
.csv or .jsonl with a text column, or `-` for stdin) predictions stream to CSV or JSONL, so a file
of any size runs in bounded memory. Empty lines give a row with an empty label, keeping rows
aligned with input lines. `--output` is replaced only once every row is written, and never names
the input file.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from emotion_lab.errors import UserInputError
from emotion_lab.inference.explain import Explanation
from emotion_lab.inference.options import add_model_options, load_model
from emotion_lab.inference.predictor import EmotionPredictor, Prediction
from emotion_lab.inference.text_files import texts_in
from emotion_lab.utils.atomic import atomic_open

EXIT_WORDS = {"exit", "quit", ":q"}
BAR_WIDTH = 24


class InputError(UserInputError, ValueError):
    """An input file that cannot be read as asked."""


def _clean(text: str) -> str:
    # Control characters carry no meaning for the tokenizer and garble terminal output.
    return "".join(ch if ch.isprintable() or ch in " \t" else " " for ch in text).strip()


def format_bars(prediction: Prediction) -> str:
    lines = []
    for label, p in sorted(prediction.probs.items(), key=lambda kv: -kv[1]):
        bar = "█" * round(p * BAR_WIDTH)
        lines.append(f"  {label:<9} {bar:<{BAR_WIDTH}} {p:6.1%}")
    return "\n".join(lines)


def format_plain(prediction: Prediction) -> str:
    return prediction.label + "\t" + " ".join(f"{k}={v:.4f}" for k, v in prediction.probs.items())


def format_explanation(explanation: Explanation) -> str:
    words = " ".join(f"{w.text} {w.score:+.2f}" for w in explanation.words)
    return f"  words ({explanation.method}, toward {explanation.label}): {words}"


def interactive(
    predictor: EmotionPredictor, stdin=sys.stdin, stdout=sys.stdout, top_words: int = 0, explain: bool = False
) -> int:
    """The read-predict-print loop; returns how many sentences it answered."""
    tty = stdin.isatty() and stdout.isatty()
    print(
        f"emotion_lab ready: {', '.join(predictor.labels)}. Type a sentence; 'exit' or Ctrl-D to quit.",
        file=stdout,
        flush=True,
    )
    answered = 0
    while True:
        try:
            line = input("> ") if tty else stdin.readline()
        except (EOFError, KeyboardInterrupt):
            break
        if not tty and line == "":  # EOF on a pipe
            break
        text = _clean(line)
        if text.lower() in EXIT_WORDS:
            break
        if not text:
            print("(empty line: type a sentence, or 'exit' to quit)", file=stdout, flush=True)
            continue
        try:
            prediction = predictor.predict([text], top_words=top_words)[0]
        except KeyboardInterrupt:
            break
        answered += 1
        note = f"  (truncated to {predictor.max_length} word-pieces)" if prediction.truncated else ""
        if tty:
            print(f"{prediction.label} ({prediction.probs[prediction.label]:.1%}){note}", file=stdout)
            print(format_bars(prediction), file=stdout)
        else:
            print(format_plain(prediction) + note, file=stdout)
        if prediction.read_as is not None:
            print(f"  read as: {_clean(prediction.read_as)}", file=stdout)
        if prediction.top_words:
            print("  attended: " + ", ".join(f"{w} {s:.2f}" for w, s in prediction.top_words), file=stdout)
        if explain:
            print(format_explanation(predictor.explain([text])[0]), file=stdout)
        stdout.flush()
    return answered


def check_output(source: str, output: str | None) -> None:
    """Refuse, before either is opened, an output that is a folder or the input file itself (also
    through a link): writing it would destroy the input."""
    if not output:
        return
    if os.path.isdir(output):
        raise InputError(f"--output {output}: a folder; name a file")
    if source != "-" and os.path.exists(source) and os.path.exists(output) and os.path.samefile(source, output):
        raise InputError(f"--output {output} is the --input file {source}; writing it would destroy it: choose another")


def read_texts(source: str, text_column: str = "text") -> Iterator[str]:
    """Texts from a .txt/.csv/.jsonl file or `-` (stdin), lazily. Invalid UTF-8 is replaced, not fatal."""
    # utf-8-sig: a byte-order mark is not part of the first text, a CSV header or a JSON line.
    if source == "-":
        handle = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", errors="replace")
        suffix = ".txt"
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"--input {source}: no such file")
        handle = open(path, encoding="utf-8-sig", errors="replace", newline="")
        suffix = path.suffix.lower()
    with handle:
        yield from texts_in(handle, suffix, source, text_column)


def write_predictions(rows: Iterator[tuple[str, Prediction | None]], out, fmt: str, labels: tuple[str, ...]) -> int:
    count = 0
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(["text", "label", *(f"p_{label}" for label in labels)])
    for text, prediction in rows:
        if fmt == "csv":
            probs = [f"{prediction.probs[label]:.6f}" for label in labels] if prediction else [""] * len(labels)
            writer.writerow([text, prediction.label if prediction else "", *probs])
        else:
            record = {
                "text": text,
                "label": prediction.label if prediction else None,
                "probs": {k: round(v, 6) for k, v in prediction.probs.items()} if prediction else None,
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        count += 1
    return count


def batch(
    predictor: EmotionPredictor,
    source: str,
    output: str | None,
    fmt: str | None,
    text_column: str = "text",
    batch_size: int = 64,
    chunk_size: int = 2048,
) -> int:
    from tqdm import tqdm

    if fmt is None:
        fmt = "jsonl" if output and Path(output).suffix.lower() in (".jsonl", ".ndjson") else "csv"
    texts = (_clean(t) for t in read_texts(source, text_column))

    def predicted() -> Iterator[tuple[str, Prediction | None]]:
        chunk: list[str] = []

        def flush():
            nonempty = [t for t in chunk if t]
            preds = iter(predictor.predict(nonempty, batch_size=batch_size)) if nonempty else iter(())
            return [(t, next(preds) if t else None) for t in chunk]

        for text in texts:
            chunk.append(text)
            if len(chunk) == chunk_size:
                yield from flush()
                chunk = []
        if chunk:
            yield from flush()

    check_output(source, output)
    # A temporary file renamed over the output when every row is written: an error midway leaves the
    # old output as it was. realpath: an output that is a symbolic link is written through, as before.
    # A device or pipe (/dev/stdout, a FIFO) cannot be replaced: it is written as a stream.
    target = os.path.realpath(output) if output else None
    if target is None:
        out = contextlib.nullcontext(sys.stdout)
    elif os.path.exists(target) and not os.path.isfile(target):
        out = open(target, "w", encoding="utf-8", newline="")  # noqa: SIM115 (closed by the with below)
    else:
        out = atomic_open(target, "w", encoding="utf-8", newline="")
    start = time.perf_counter()
    try:
        with out as handle:
            progress = tqdm(predicted(), unit=" sentences", file=sys.stderr, disable=not sys.stderr.isatty())
            count = write_predictions(progress, handle, fmt, predictor.labels)
    except OSError as err:
        raise InputError(f"--output {output}: cannot be written ({err.strerror or err})") from None
    elapsed = time.perf_counter() - start
    print(
        f"{count} predictions in {elapsed:.1f}s ({count / max(elapsed, 1e-9):.0f}/s)"
        + (f" -> {output}" if output else ""),
        file=sys.stderr,
    )
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emotion_lab.predict",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="a saved model folder or a Lightning .ckpt")
    parser.add_argument("--input", help="batch mode: .txt, .csv or .jsonl file, or - for stdin")
    parser.add_argument("--output", help="batch output file (default: stdout)")
    parser.add_argument(
        "--format", choices=["csv", "jsonl"], help="batch output format (default: from --output, else csv)"
    )
    parser.add_argument("--text-column", default="text", help="text column of .csv/.jsonl input (default: text)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--top-words", type=int, default=0, help="interactive: show the N most-attended word-pieces")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="interactive: show each word's attribution to the predicted label (integrated gradients, on the "
        "fp32 torch network whatever the backend; about 30 forward and backward passes a sentence)",
    )
    add_model_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.batch_size < 1:
        parser.error(f"--batch-size {args.batch_size}: must be >= 1")
    if args.explain and (args.input is not None or args.format is not None):
        parser.error("--explain: the interactive loop only (no --input or --format)")
    try:
        check_output(args.input or "-", args.output)  # before the model loads: a typo costs nothing
        predictor = load_model(args)
        if args.input is None and args.format is None:
            interactive(predictor, top_words=args.top_words, explain=args.explain)
        else:
            batch(predictor, args.input or "-", args.output, args.format, args.text_column, args.batch_size)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `... | head`: the reader left, nothing is wrong
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
