"""The command-line options that say how a model is loaded, shared by `predict` and `serve`."""

from __future__ import annotations

import argparse

from emotion_lab.inference.predictor import BACKENDS, EmotionPredictor


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """How a command loads its model (`predict`, `serve`): read back by `load_model`."""
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="torch, onnx (onnxruntime over the folder's model.onnx), or auto: onnx when the folder has it "
        "and onnxruntime is installed (default)",
    )
    parser.add_argument(
        "--quantize",
        action="store_true",
        help="int8: torch's dynamic quantization, or the folder's model.int8.onnx (speed and accuracy of each: "
        "docs/performance.md)",
    )
    parser.add_argument(
        "--trust-module",
        action="append",
        default=[],
        metavar="MODULE",
        help="a module besides emotion_lab whose EmotionNet subclasses the model may name (your own variant)",
    )
    parser.add_argument(
        "--allow-download",
        action="store_true",
        help="a .ckpt's encoder may be downloaded from the hub (default: local folders and the hub cache only; "
        "a model folder always loads from its own files)",
    )
    parser.add_argument(
        "--no-spelling",
        dest="spelling",
        action="store_false",
        help="read text as written, even where the model has a spelling step (words.tsv): to compare the two",
    )


def load_model(args: argparse.Namespace) -> EmotionPredictor:
    return EmotionPredictor.from_pretrained(
        args.model,
        trusted_modules=args.trust_module,
        backend=args.backend,
        int8=args.quantize,
        allow_download=args.allow_download,
        spelling=args.spelling,
    )
