"""Inference without Hydra, Lightning or training data: `EmotionPredictor`.

    from emotion_lab.inference.predictor import EmotionPredictor
    predictor = EmotionPredictor.from_pretrained("outputs/best_cpu/runs/<time>/model")
    predictor("I feel so happy today!")          # Prediction(label='joy', probs={...})
    predictor.predict(texts, batch_size=64)      # one Prediction per text, in input order
    EmotionPredictor.from_pretrained(folder, backend="onnx", int8=True)   # onnxruntime, int8

A saved model folder (written by `python -m emotion_lab.export`, or at the end of training) holds
`model.safetensors`, `emotion_lab.json` (network config, labels, max length), the encoder's
`config.json` under `encoder/`, the tokenizer, the temperature its probabilities are scaled by
(fitted on validation), a model card, `words.tsv` when trained with `data.spelling=true` (the spelling
step's dictionary: every text is read through it, `robustness.spelling`) and, when exported with
`onnx=true`, `model.onnx` and `model.int8.onnx`. Loading never unpickles: weights come from safetensors, and
Lightning checkpoints are read with `torch.load(weights_only=True)`.

Backends: `torch` (the network; `int8` = torch's dynamic quantization of its Linear and LSTM layers),
`onnx` (onnxruntime over the folder's ONNX file, without building the torch network), or `auto`
(onnx when the folder has it and onnxruntime is installed, else torch).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from emotion_lab.encoders.loading import downloads_refused, load_tokenizer
from emotion_lab.errors import ModelLoadError, UserInputError, first_line
from emotion_lab.inference.explain import Explainer, Explanation
from emotion_lab.labels import LABELS
from emotion_lab.models.calibration import checked_temperature
from emotion_lab.models.loading import (
    build_network,
    check_shapes,
    checkpoint_network,
    checkpoint_spelling_words,
    read_checkpoint,
)
from emotion_lab.robustness.spelling import DICTIONARY_FILE, WordRecognizer

FORMAT_VERSION = 1
CONFIG_FILE = "emotion_lab.json"
WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
BACKENDS = ("torch", "onnx", "auto")
ENCODER_DIR = "encoder"
MAX_LENGTH_LIMIT = 8192  # word-pieces; BERT-family encoders take 512


@dataclass
class Prediction:
    label: str
    probs: dict[str, float]
    truncated: bool = False
    top_words: list[tuple[str, float]] = field(default_factory=list)
    read_as: str | None = None  # the text as the network read it, where the spelling step changed it


@dataclass
class WordAttention:
    """The attention one sentence's words received: each word's word-pieces summed, averaged over heads and
    queries, renormalised over the words; what went to special tokens ([CLS], [SEP]) is `special_share`."""

    words: list[str]
    weights: list[float]
    special_share: float
    label: str
    prob: float


class TorchBackend:
    """A torch network as a backend: (ids, mask, with_attention) -> (logits, head-averaged attention or None)."""

    def __init__(self, net: nn.Module, int8: bool = False) -> None:
        self.net = net.eval()
        self.int8 = int8
        self.name = "torch int8" if int8 else "torch fp32"

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor, with_attention: bool = False):
        weight = next(self.net.parameters(), None)  # a network still on the GPU it was tested on
        if weight is not None:
            ids, mask = ids.to(weight.device), mask.to(weight.device)
        if not with_attention or getattr(self.net, "attention", None) is None:
            return self.net(ids, mask), None
        hidden, mask = self.net.encode(ids, mask)
        return self.net.head(hidden, mask, return_attention=True)


class EmotionPredictor:
    """A trained network (or its ONNX graph) plus its tokenizer, ready for fast CPU inference."""

    def __init__(
        self,
        net: nn.Module | None,
        tokenizer,
        labels: Sequence[str] = LABELS,
        max_length: int = 128,
        backend=None,
        net_config: dict | None = None,
        temperature: float = 1.0,
        spelling: WordRecognizer | None = None,
    ) -> None:
        if net is None and backend is None:
            raise ValueError("EmotionPredictor needs a network or a backend")
        self.net = net.eval() if net is not None else None
        self.backend = backend if backend is not None else TorchBackend(self.net)
        self.net_config = net_config if net_config is not None else self.net.config
        self.tokenizer = tokenizer
        self.labels = tuple(labels)
        self.max_length = max_length
        # Probabilities are softmax(logits / temperature), fitted on validation after training; labels never change.
        self.temperature = temperature
        # Misspelt words are read as the training words they most likely meant, before the tokenizer.
        self.spelling = spelling
        self.source: Path | None = None  # the model folder or checkpoint loaded, where explanations find fp32 weights
        self.trusted_modules: tuple[str, ...] = ()
        self._explainer = None

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        trusted_modules: Sequence[str] = (),
        backend: str = "torch",
        int8: bool = False,
        allow_download: bool = False,
        spelling: bool = True,
    ) -> EmotionPredictor:
        """Load a model folder (or a Lightning checkpoint). Its network class must be an emotion_lab one,
        or from a module named in `trusted_modules`: the folder cannot make loading run other code.
        `backend` is torch | onnx | auto (module docstring); `int8` picks the quantized variant. A folder
        loads from its own files only; a checkpoint's encoder is downloaded only with `allow_download`.
        `spelling=False` reads text as written even where the model has a spelling step."""
        if backend not in BACKENDS:
            raise ModelLoadError(f"backend={backend!r}: allowed values are {BACKENDS}")
        folder = Path(path)
        if folder.is_file():
            if backend == "onnx":
                raise ModelLoadError(f"{folder}: the onnx backend reads a model folder, not a checkpoint")
            predictor = cls.from_checkpoint(
                folder, trusted_modules=trusted_modules, allow_download=allow_download, spelling=spelling
            )
            predictor.source, predictor.trusted_modules = folder, tuple(trusted_modules)
            return predictor.quantize_dynamic() if int8 else predictor
        config = _read_folder_config(folder)
        config_path = folder / CONFIG_FILE
        local = {"encoder_name": str(folder / ENCODER_DIR)}  # never the encoder name recorded at training time
        if backend == "auto":
            onnx_file = folder / (ONNX_INT8_FILE if int8 else ONNX_FILE)
            backend = "onnx" if onnx_file.is_file() and _has_onnxruntime() else "torch"
        if backend == "onnx":
            predictor = cls._from_onnx(folder, config, int8, _temperature(config, config_path), spelling)
            predictor.source, predictor.trusted_modules = folder, tuple(trusted_modules)
            return predictor
        weights_file = folder / WEIGHTS_FILE
        try:
            with downloads_refused():
                check_shapes(config.get("net"), _header_shapes(weights_file), weights_file, trusted_modules, **local)
                net = build_network(config.get("net"), trusted_modules, **local)
                try:
                    weights = load_file(weights_file)
                except Exception as err:
                    raise ModelLoadError(
                        f"{weights_file}: not a readable safetensors file ({first_line(err)})"
                    ) from None
                _load_weights(net, weights, weights_file)
                tokenizer = load_tokenizer(str(folder))
        except UserInputError:
            raise
        except Exception as err:
            raise ModelLoadError(f"{folder}: cannot load the model ({type(err).__name__}: {first_line(err)})") from None
        predictor = cls(
            net, tokenizer, config["labels"], config["max_length"], temperature=_temperature(config, config_path),
            spelling=_folder_spelling(folder, config, tokenizer) if spelling else None,
        )  # fmt: skip
        predictor.source, predictor.trusted_modules = folder, tuple(trusted_modules)
        return predictor.quantize_dynamic() if int8 else predictor

    @classmethod
    def _from_onnx(
        cls, folder: Path, config: dict, int8: bool, temperature: float, spelling: bool = True
    ) -> EmotionPredictor:
        from emotion_lab.inference.onnx import OnnxBackend

        file = folder / (ONNX_INT8_FILE if int8 else ONNX_FILE)
        if not file.is_file():
            raise ModelLoadError(
                f"{folder}: no {file.name}; write it with `python -m emotion_lab.export ckpt_path={folder} "
                f"out={folder} onnx=true`, or use backend=torch"
            )
        try:
            with downloads_refused():
                tokenizer = load_tokenizer(str(folder))
        except UserInputError:
            raise
        except Exception as err:
            raise ModelLoadError(f"{folder}: cannot load the tokenizer ({first_line(err)})") from None
        backend = OnnxBackend(file, name="onnx int8" if int8 else "onnx fp32")
        return cls(
            None,
            tokenizer,
            labels=config["labels"],
            max_length=config["max_length"],
            backend=backend,
            net_config=config["net"],
            temperature=temperature,
            spelling=_folder_spelling(folder, config, tokenizer) if spelling else None,
        )

    @classmethod
    def from_checkpoint(
        cls,
        ckpt_path: str | Path,
        max_length: int = 128,
        trusted_modules: Sequence[str] = (),
        allow_download: bool = False,
        spelling: bool = True,
    ) -> EmotionPredictor:
        """From a Lightning checkpoint of EmotionClassifier (the encoder name must still resolve: locally,
        or from the hub only with `allow_download`)."""
        path = Path(ckpt_path)
        try:
            checkpoint = read_checkpoint(path)
            net_config = checkpoint["hyper_parameters"]["net"]
            net = checkpoint_network(checkpoint, path, trusted_modules, allow_download=allow_download)
            state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
            _load_weights(net, state, path)
            with contextlib.nullcontext() if allow_download else downloads_refused():
                tokenizer = load_tokenizer(net_config["encoder_name"])
            max_length = checkpoint.get("datamodule_hyper_parameters", {}).get("max_length", max_length)
            _check_max_length(max_length, path)
            temperature = _temperature(checkpoint, path)
            counts = checkpoint_spelling_words(checkpoint, path) if spelling else None
            spelling = WordRecognizer.for_tokenizer(counts, tokenizer) if counts else None
        except UserInputError:
            raise
        except Exception as err:
            raise ModelLoadError(
                f"{path}: not a readable emotion_lab checkpoint ({type(err).__name__}: {first_line(err)})"
            ) from None
        return cls(net, tokenizer, max_length=max_length, temperature=temperature, spelling=spelling)

    def save_pretrained(self, path: str | Path, card: str = "") -> Path:
        """Write a self-contained model folder (see the module docstring)."""
        if not isinstance(self.backend, TorchBackend) or self.backend.int8:
            raise ModelLoadError(f"a {self.backend.name} predictor cannot be saved: load the model with backend=torch")
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        # Tied or shared tensors must be stored once: clone to contiguous, independent tensors.
        state = {k: v.detach().contiguous().clone() for k, v in self.net.state_dict().items()}
        save_file(state, folder / WEIGHTS_FILE, metadata={"format": "pt"})
        self.net.encoder.config.save_pretrained(folder / ENCODER_DIR)
        self.tokenizer.save_pretrained(folder)
        config = {
            "format_version": FORMAT_VERSION,
            "net": self.net_config,
            "labels": list(self.labels),
            "max_length": self.max_length,
            "temperature": self.temperature,
        }
        if self.spelling is not None:
            config["spelling"] = self.spelling.save(folder).name
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        if card:
            (folder / "README.md").write_text(card)
        return folder

    def quantize_dynamic(self) -> EmotionPredictor:
        """int8 dynamic quantization of the Linear and LSTM layers (CPU); measure its accuracy cost.
        The quantized LSTM runs through PackedSequence (`models.bilstm.run_bilstm`)."""
        if self.net is None:
            raise ModelLoadError(f"int8 for the {self.backend.name} backend: load it with int8=True instead")
        with warnings.catch_warnings():  # torch marks its quantized tensor API deprecated (in favour of torchao)
            warnings.simplefilter("ignore", UserWarning)
            self.net = torch.ao.quantization.quantize_dynamic(self.net, {nn.Linear, nn.LSTM}, dtype=torch.qint8)
        self.backend = TorchBackend(self.net, int8=True)
        return self

    def __call__(self, text: str) -> Prediction:
        return self.predict([text])[0]

    def read(self, texts: Sequence[str]) -> list[str]:
        """The texts as the network reads them: through the spelling step where the model has one."""
        return list(map(self.spelling, texts)) if self.spelling is not None else list(texts)

    @torch.inference_mode()
    def predict(self, texts: Sequence[str], batch_size: int = 64, top_words: int = 0) -> list[Prediction]:
        """Predictions in input order. Batches are length-sorted: far less padding on CPU."""
        written, texts = texts, self.read(texts)
        encoded = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            return_overflowing_tokens=False,
            return_length=True,
        )
        lengths = encoded["length"]
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        results: list[Prediction | None] = [None] * len(texts)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batch = self.tokenizer.pad({"input_ids": [encoded["input_ids"][i] for i in index]}, return_tensors="pt")
            ids, mask = batch["input_ids"], batch["attention_mask"]
            logits, weights = self.backend(ids, mask, with_attention=top_words > 0)
            probs = (logits.float() / self.temperature).softmax(-1)
            for row, i in enumerate(index):
                p = probs[row].tolist()
                results[i] = Prediction(
                    label=self.labels[max(range(len(p)), key=p.__getitem__)],
                    probs=dict(zip(self.labels, p)),
                    truncated=lengths[i] >= self.max_length and self._is_truncated(texts[i]),
                    top_words=self._top_words(ids[row], mask[row], weights[row], top_words)
                    if weights is not None
                    else [],
                    read_as=texts[i] if texts[i] != written[i] else None,
                )
        return results

    @torch.inference_mode()
    def word_attention(self, texts: Sequence[str]) -> list[WordAttention]:
        """Per word, the attention it received (see `WordAttention`); needs a network with an attention
        layer and a fast tokenizer (word boundaries)."""
        results = []
        for text in self.read(texts):
            encoded = self.tokenizer(text, truncation=True, max_length=self.max_length, return_tensors="pt")
            logits, weights = self.backend(encoded["input_ids"], encoded["attention_mask"], with_attention=True)
            if weights is None:
                raise ValueError(f"this model ({self.backend.name}) returns no attention: no attention over words")
            received = weights[0].float().cpu().mean(0)  # by key position, averaged over the queries
            by_word: dict[int, float] = {}
            for position, word in enumerate(encoded.word_ids(0)):
                if word is not None:
                    by_word[word] = by_word.get(word, 0.0) + float(received[position])
            on_words = sum(by_word.values())
            spans = [encoded.word_to_chars(0, word) for word in by_word]
            probs = (logits[0].float().cpu() / self.temperature).softmax(-1)
            results.append(
                WordAttention(
                    words=[text[span.start : span.end] for span in spans],
                    weights=[w / on_words if on_words else 0.0 for w in by_word.values()],
                    special_share=max(0.0, 1.0 - on_words),
                    label=self.labels[int(probs.argmax())],
                    prob=float(probs.max()),
                )
            )
        return results

    def explain(self, texts: Sequence[str], steps: int = 32) -> list[Explanation]:
        """Word attributions of each text's predicted label by integrated gradients (`inference.explain`),
        on the fp32 torch network: this one's, or for an ONNX or int8 predictor the one its `source` holds."""
        if self._explainer is None or self._explainer.steps != steps:
            net = self.net if isinstance(self.backend, TorchBackend) and not self.backend.int8 else None
            if net is None:
                if self.source is None:
                    raise ModelLoadError(
                        f"explanations need the fp32 torch network; this {self.backend.name} predictor was not loaded "
                        "from a model folder or checkpoint (load it without int8)"
                    )
                net = EmotionPredictor.from_pretrained(
                    self.source, self.trusted_modules, backend="torch", spelling=False
                ).net
            self._explainer = Explainer(net, self.tokenizer, self.labels, self.max_length, self.temperature, steps)
        return self._explainer.explain(self.read(texts))

    def _is_truncated(self, text: str) -> bool:
        return len(self.tokenizer(text, truncation=False)["input_ids"]) > self.max_length

    def _top_words(
        self, ids: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor, k: int
    ) -> list[tuple[str, float]]:
        """Word-pieces that received the most attention (averaged over heads and queries)."""
        n = int(mask.sum())
        received = weights[:n, :n].mean(0)
        tokens = self.tokenizer.convert_ids_to_tokens(ids[:n].tolist())
        special = set(self.tokenizer.all_special_tokens)
        ranked = sorted(((t, float(w)) for t, w in zip(tokens, received) if t not in special), key=lambda x: -x[1])
        return ranked[:k]


def _has_onnxruntime() -> bool:
    # onnx reads the file's header before onnxruntime runs it (external data is refused).
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def _temperature(source: dict, where: Path) -> float:
    if "temperature" in source and source["temperature"] is None:
        raise ModelLoadError(f"{where}: temperature None is not a positive number")
    found = checked_temperature(source.get("temperature"), where)
    return 1.0 if found is None else found  # files from before calibration: probabilities as trained


def _read_folder_config(folder: Path) -> dict:
    config_path = folder / CONFIG_FILE
    if not folder.is_dir() or not config_path.is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise ModelLoadError(
            f"{folder}: not an emotion_lab model (expected a folder with {CONFIG_FILE} and {WEIGHTS_FILE}, "
            "written by `python -m emotion_lab.export`, or a Lightning .ckpt file)"
        )
    try:
        config = json.loads(config_path.read_text())
    except Exception as err:
        raise ModelLoadError(f"{config_path}: not readable JSON ({first_line(err)})") from None
    if not isinstance(config, dict) or config.get("format_version") != FORMAT_VERSION:
        version = config.get("format_version") if isinstance(config, dict) else None
        raise ModelLoadError(f"{config_path}: format_version {version!r}, this emotion_lab reads {FORMAT_VERSION}")
    if config.get("labels") != list(LABELS):
        raise ModelLoadError(f"{config_path}: labels {config.get('labels')} differ from emotion_lab's {list(LABELS)}")
    _check_max_length(config.get("max_length"), config_path)
    return config


def _folder_spelling(folder: Path, config: dict, tokenizer) -> WordRecognizer | None:
    """The spelling step a model folder's config names (only ever its own `words.tsv`), or None."""
    name = config.get("spelling")
    if name is None:
        return None
    if name != DICTIONARY_FILE:
        raise ModelLoadError(f"{folder / CONFIG_FILE}: spelling={name!r}: allowed: {DICTIONARY_FILE!r}")
    if not (folder / name).is_file():
        raise ModelLoadError(f"{folder}: {CONFIG_FILE} names a spelling dictionary, but {name} is missing")
    return WordRecognizer.for_tokenizer(WordRecognizer.read_counts(folder / name), tokenizer)


def _check_max_length(length, where: Path) -> int:
    if not isinstance(length, int) or isinstance(length, bool) or not 1 <= length <= MAX_LENGTH_LIMIT:
        raise ModelLoadError(f"{where}: max_length {length!r} is not a whole number in 1..{MAX_LENGTH_LIMIT}")
    return length


def _header_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    """The tensor shapes a safetensors file declares, read from its header alone (no tensor is loaded)."""
    try:
        with safe_open(file, framework="pt") as stored:
            return {key: tuple(stored.get_slice(key).get_shape()) for key in stored.keys()}
    except Exception as err:
        raise ModelLoadError(f"{file}: not a readable safetensors file ({first_line(err)})") from None


def _load_weights(net: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    own = net.state_dict()
    wrong = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if k in own and v.shape != own[k].shape]
    if wrong:
        key, theirs, ours = wrong[0]
        raise ModelLoadError(
            f"{source}: weights do not fit the network ({len(wrong)} of another shape, e.g. {key}: {theirs} "
            f"in the file, {ours} in the network its config describes)"
        )
    missing, unexpected = net.load_state_dict(state, strict=False)
    # position_ids buffers differ between transformers versions; they are not weights.
    missing = [k for k in missing if not k.endswith("position_ids")]
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ModelLoadError(
            f"{source}: weights do not fit the network (missing {missing[:3]}, unexpected {unexpected[:3]}): "
            "incompatible emotion_lab version or a different model"
        )
