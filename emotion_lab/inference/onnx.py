"""ONNX export of a network and an onnxruntime runner for `EmotionPredictor` (optional: `pip install -e .[onnx]`).

The graph takes `input_ids` and `attention_mask` (int64, batch x length, both dynamic) and returns
`logits` (batch x classes) and, for networks with attention, `attention` (batch x queries x length,
averaged over heads; queries = length for self-attention). `export_onnx` checks the file against
the torch network on sentences of many lengths before it returns; `quantize_onnx` writes
onnxruntime's int8 dynamic quantization of it.
The files live inside the safetensors model folder, which stays the canonical format.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emotion_lab.errors import ModelLoadError, first_line

log = logging.getLogger(__name__)

OPSET = 18
# Sentences the export is checked on: lengths from 1 word to ~60 word-pieces, in batches of 1, 2 and 5.
CHECK_TEXTS = (
    "wow",
    "i feel so happy today",
    "i am scared of what tomorrow brings and i cannot sleep at all tonight",
    "he left without a word and i am furious",
    "i never expected to see you here of all places",
    "i feel loved and cherished by everyone around me "
    + "and i keep thinking about how lucky i am to have them in my life " * 3,
)


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise ModelLoadError(
            f"the ONNX backend needs the {module!r} package: pip install -e '.[onnx]' "
            "(onnx, onnxscript and onnxruntime)"
        ) from None


class _ExportedGraph(nn.Module):
    """What the ONNX file computes: logits, plus head-averaged attention when the network has it."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.with_attention = getattr(net, "attention", None) is not None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        hidden, mask = self.net.encode(input_ids, attention_mask)
        if self.with_attention:
            return self.net.head(hidden, mask, return_attention=True)
        return self.net.head(hidden, mask)


def _bilstm_layer_to_onnx(
    x, lengths, weight_ih, weight_hh, bias_ih, bias_hh, weight_ih_reverse, weight_hh_reverse, bias_ih_r, bias_hh_r
):
    """`emotion_lab::bilstm_layer` as ONNX's LSTM: `sequence_lens` makes the backward direction start at
    each sentence's last real token, as the torch op does."""
    from onnxscript import opset18 as op

    h = weight_hh.shape[1]
    # torch orders the gates i, f, g, o; ONNX orders them i, o, f, c. One Gather on constant weights:
    # the exporter folds it, so the file stores the weights already reordered.
    gates = op.Constant(value_ints=[*range(0, h), *range(3 * h, 4 * h), *range(h, 2 * h), *range(2 * h, 3 * h)])

    def iofc(tensor):
        return op.Gather(tensor, gates, axis=0)

    def stack(forward, backward):
        return op.Concat(op.Unsqueeze(forward, [0]), op.Unsqueeze(backward, [0]), axis=0)

    w = stack(iofc(weight_ih), iofc(weight_ih_reverse))
    r = stack(iofc(weight_hh), iofc(weight_hh_reverse))
    b = stack(op.Concat(iofc(bias_ih), iofc(bias_hh), axis=0), op.Concat(iofc(bias_ih_r), iofc(bias_hh_r), axis=0))
    steps_first = op.Transpose(x, perm=[1, 0, 2])
    y, _, _ = op.LSTM(
        steps_first, w, r, b, op.Cast(lengths, to=6), direction="bidirectional", hidden_size=h
    )  # y: (length, direction, batch, hidden); 6 = INT32
    return op.Reshape(op.Transpose(y, perm=[2, 0, 1, 3]), [0, 0, -1])


def export_onnx(net: nn.Module, tokenizer, path: str | Path, max_length: int = 128, atol: float = 1e-3) -> Path:
    """Write `net` as an ONNX file with dynamic batch and length, optimised for onnxruntime and checked
    against torch; return its path."""
    _require("onnxscript")
    path = Path(path)
    net = net.eval()
    graph = _ExportedGraph(net).eval()
    example = tokenizer(list(CHECK_TEXTS[:2]), padding=True, return_tensors="pt")
    batch, length = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("length", min=1, max=max_length)
    dims = {0: batch, 1: length}
    encoder = net.encoder
    attention_kind = encoder.config._attn_implementation
    # Plain matmul-softmax attention: onnxruntime's graph optimiser fuses more of it than of SDPA's export.
    encoder.set_attn_implementation("eager")
    try:
        with torch.inference_mode(False), torch.no_grad():
            program = torch.onnx.export(
                graph,
                (example["input_ids"], example["attention_mask"]),
                dynamo=True,
                input_names=["input_ids", "attention_mask"],
                output_names=["logits", "attention"] if graph.with_attention else ["logits"],
                dynamic_shapes={"input_ids": dims, "attention_mask": dims},
                custom_translation_table={torch.ops.emotion_lab.bilstm_layer.default: _bilstm_layer_to_onnx},
                opset_version=OPSET,
                optimize=True,
                verbose=False,
            )
    finally:
        encoder.set_attn_implementation(attention_kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")  # only a checked graph takes the final name
    try:
        with _quiet():
            program.save(partial, external_data=False)
        _optimize_for_onnxruntime(partial, encoder.config)
        check_onnx(net, tokenizer, partial, max_length=max_length, atol=atol)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _optimize_for_onnxruntime(path: Path, config) -> None:
    """onnxruntime's transformer fusions (LayerNorm, GELU, ...), saved into the file: faster to load and run."""
    from onnxruntime.transformers.optimizer import optimize_model

    heads, hidden = getattr(config, "num_attention_heads", 0), getattr(config, "hidden_size", 0)
    try:
        with _quiet():
            optimized = optimize_model(str(path), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=1)
            optimized.save_model_to_file(str(path))
    except Exception as err:  # an encoder the fusions do not know still exports, unfused
        log.warning("%s: onnxruntime graph optimisation skipped (%s)", path, first_line(err))


def check_onnx(net: nn.Module, tokenizer, path: Path, max_length: int = 128, atol: float = 1e-3) -> float:
    """Largest |logit difference| between `path` and `net` over batches of 1, 2 and 5 sentences of
    different lengths; raises if it exceeds `atol`."""
    runner = OnnxBackend(path, threads=1)
    worst = 0.0
    texts = list(CHECK_TEXTS)
    for size in (1, 2, 5):
        for start in range(0, len(texts) - size + 1, size):
            batch = tokenizer(texts[start : start + size], padding=True, truncation=True, max_length=max_length)
            ids = torch.tensor(batch["input_ids"])
            mask = torch.tensor(batch["attention_mask"])
            with torch.inference_mode():
                expected = net(ids, mask)
            got, _ = runner(ids, mask)
            worst = max(worst, float((got - expected).abs().max()))
    if worst > atol:
        raise RuntimeError(f"{path}: ONNX logits differ from torch by {worst:.2e} (> {atol:g}); not usable")
    log.info("%s: ONNX logits match torch within %.1e", path, worst)
    return worst


def quantize_onnx(source: str | Path, target: str | Path) -> Path:
    """onnxruntime's int8 dynamic quantization (weights int8 per output channel, activations quantized per
    batch)."""
    _require("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = Path(target)
    partial = target.with_name(target.name + ".partial")
    try:
        with _quiet():
            # 7-bit weights: CPUs without VNNI (AVX2) sum uint8 x int8 pairs in int16, which 8-bit weights
            # overflow; per-channel scales win back more than the lost bit, so every CPU gets the same logits.
            quantize_dynamic(
                str(source), str(partial), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True
            )
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


@contextmanager
def _quiet():
    """onnxruntime's optimiser and quantizer log each node they touch at INFO: keep them to warnings."""
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _tensors(graph) -> Iterator:
    """Every tensor a graph holds: initializers, sparse ones, and those in node attributes and subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    yield from _node_tensors(graph.node)


def _node_tensors(nodes) -> Iterator:
    for node in nodes:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)


def refuse_external_data(path: Path) -> None:
    """One line if an ONNX file points at external data: onnxruntime would open files the ONNX file names
    (emotion_lab writes every tensor inside the file), so it is refused before a session is created."""
    onnx = _require("onnx")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise ModelLoadError(f"{path}: not a loadable ONNX model ({first_line(err)})") from None
    tensors = [*_tensors(model.graph), *(t for f in model.functions for t in _node_tensors(f.node))]
    external = [t.name for t in tensors if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ModelLoadError(
            f"{path}: refused, {len(external)} of its tensors point at external data files (e.g. {external[0]!r}); "
            "emotion_lab's ONNX files hold all their data: export the model again"
        )


class OnnxBackend:
    """An onnxruntime session with the torch network's call signature: (ids, mask) -> (logits, attention)."""

    def __init__(self, path: str | Path, threads: int | None = None, name: str = "onnx fp32") -> None:
        ort = _require("onnxruntime")
        self.name = name
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        refuse_external_data(Path(path))
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise ModelLoadError(f"{path}: not a loadable ONNX model ({first_line(err)})") from None
        self.path = Path(path)
        self.outputs: Sequence[str] = [o.name for o in self.session.get_outputs()]

    @property
    def has_attention(self) -> bool:
        return "attention" in self.outputs

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor, with_attention: bool = False):
        feed = {"input_ids": ids.numpy().astype(np.int64), "attention_mask": mask.numpy().astype(np.int64)}
        names = ["logits", "attention"] if with_attention and self.has_attention else ["logits"]
        out = self.session.run(names, feed)
        return torch.from_numpy(out[0]), (torch.from_numpy(out[1]) if len(out) > 1 else None)
