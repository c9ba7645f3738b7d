"""Writing a model folder from a checkpoint (or adding ONNX graphs to a folder), swapped in whole.

The folder is written beside `out` and renamed into place: an export that fails leaves the old folder
as it was. `out` must be new, empty or a model folder, since its old contents are replaced. The
command is `python -m emotion_lab.export`; training calls `export` for `<run>/model`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from emotion_lab.errors import UserInputError
from emotion_lab.inference.predictor import CONFIG_FILE, ONNX_FILE, ONNX_INT8_FILE, EmotionPredictor
from emotion_lab.labels import LABELS

log = logging.getLogger(__name__)
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # the `onnx` extra: export, and int8 quantization


def wants_onnx(onnx: bool | str) -> bool:
    """Whether to write the ONNX files: `auto` when the onnx extra is installed; `true` requires it."""
    if onnx not in (True, False, "auto"):
        raise UserInputError(f"onnx={onnx!r}: allowed values are true, false, auto")
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if onnx is True and missing:
        raise UserInputError(
            f"onnx=true needs the onnx extra ({', '.join(missing)} missing): pip install -e '.[onnx]', or onnx=auto"
        )
    return onnx is True or (onnx == "auto" and not missing)


def model_card(predictor: EmotionPredictor, ckpt_path: Path, metrics: dict[str, float] | None, data_source: str) -> str:
    net = predictor.net_config
    settings = ", ".join(f"{k}={v}" for k, v in net.items() if k not in ("_target_", "encoder_name"))
    lines = [
        "# emotion_lab model",
        "",
        f"- network: `{net['_target_'].rsplit('.', 1)[-1]}` ({settings})",
        f"- backbone: `{net['encoder_name']}`",
        f"- labels (ids 0..{len(LABELS) - 1}): {', '.join(predictor.labels)}",
        f"- data: dair-ai/emotion ({data_source})",
        f"- max length: {predictor.max_length} word-pieces",
        f"- temperature: {predictor.temperature:.4f} (probabilities are softmax(logits / T), T fitted on validation)",
        f"- spelling step: {len(predictor.spelling.counts)} training words (`words.tsv`; text is read through it)"
        if predictor.spelling is not None
        else "- spelling step: none (text is read as written)",
        f"- exported from: `{ckpt_path.name}`",  # the file, not where it lay on the exporting machine
        "",
        "Load with `EmotionPredictor.from_pretrained(this_folder)` or `python -m emotion_lab.predict this_folder`.",
    ]
    if metrics:
        lines += ["", "## Test metrics (from the training run)", "", "| metric | value |", "|---|---|"]
        keys = ["test/f1_weighted", "test/f1_macro", "test/acc"] + [f"test_f1/{label}" for label in LABELS]
        keys += ["test/ece", "test/ece_calibrated", "test/nll", "test/nll_calibrated"]
        lines += [f"| {k} | {metrics[k]:.4f} |" for k in keys if k in metrics]
    return "\n".join(lines) + "\n"


def check_replaceable(folder: Path, ckpt_path: Path) -> None:
    """Export replaces `folder` whole: refuse one whose contents are not a model's."""
    if folder.exists() and not folder.is_dir():
        raise UserInputError(f"out={folder}: a file, not a folder; give the model folder to write")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / CONFIG_FILE).is_file():
        raise UserInputError(
            f"out={folder}: a folder that is not a model folder (no {CONFIG_FILE}); export replaces its whole "
            "contents, so give a new folder or a model folder"
        )
    if ckpt_path.resolve().is_relative_to(folder.resolve()):
        raise UserInputError(f"ckpt_path={ckpt_path}: inside out={folder}, which export replaces; export elsewhere")


@contextlib.contextmanager
def replacing(folder: Path) -> Iterator[Path]:
    """A new sibling folder to write into. On a clean exit it takes `folder`'s place (the old one is
    renamed aside, the new one renamed in, the old one deleted); on an exception it is deleted and
    `folder` is untouched."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".new"))
    aside = staging.with_suffix(".old")
    try:
        yield staging
        os.chmod(staging, folder.stat().st_mode & 0o777 if folder.is_dir() else 0o755)  # mkdtemp's is 0700
        for path in staging.rglob("*"):  # on disk before the rename makes them the model
            if path.is_file():
                with open(path, "rb") as file:
                    os.fsync(file.fileno())
        if folder.is_dir():
            os.rename(folder, aside)
        try:
            os.rename(staging, folder)
        except BaseException:
            if aside.is_dir():
                os.rename(aside, folder)
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def export(
    ckpt_path: str | Path,
    out: str | Path,
    metrics: dict[str, float] | None = None,
    data_source: str = "unknown source",
    trusted_modules: Sequence[str] = (),
    onnx: bool | str = "auto",
    allow_download: bool = False,
    max_length: int | None = None,
) -> Path:
    """Write the model folder `out` from a checkpoint (or from a model folder, e.g. to add ONNX to it); the
    checkpoint's encoder is downloaded only with `allow_download`. `max_length`: what the training data was
    truncated to, when the caller knows better than the checkpoint's datamodule hyperparameters. `onnx`:
    also write model.onnx and model.int8.onnx: true, false, or auto (when the onnx extra is installed)."""
    required, onnx = onnx is True, wants_onnx(onnx)
    ckpt_path, folder = Path(ckpt_path), Path(out)
    in_place = ckpt_path.is_dir() and folder.resolve() == ckpt_path.resolve()
    if not in_place:
        check_replaceable(folder, ckpt_path)
    predictor = EmotionPredictor.from_pretrained(
        ckpt_path, trusted_modules=trusted_modules, allow_download=allow_download
    )
    if max_length is not None:
        predictor.max_length = max_length
    if ckpt_path.is_dir():
        card = ckpt_path / "README.md"
        card = card.read_text() if card.is_file() else ""
    else:
        if metrics is None:
            # A checkpoint inside a run folder: take the run's test metrics for the card.
            run_metrics = ckpt_path.parent.parent / "metrics.json"
            metrics = json.loads(run_metrics.read_text()) if run_metrics.is_file() else None
            data_source = (metrics or {}).get("data_source", data_source)
        card = model_card(predictor, ckpt_path, metrics, data_source)
    if in_place and not onnx:
        return folder  # nothing to add
    with replacing(folder) as staging:
        if in_place:
            shutil.copytree(folder, staging, dirs_exist_ok=True)  # the model as it is; its ONNX files rewritten
        else:
            # A fresh folder: the ONNX files of what was there are not served with the new weights.
            predictor.save_pretrained(staging, card=card)
        if onnx:
            onnx = _write_onnx(predictor, staging, required)
    log.info("exported %s -> %s%s", ckpt_path, folder, " (with ONNX fp32 and int8)" if onnx else "")
    return folder


def _write_onnx(predictor: EmotionPredictor, folder: Path, required: bool) -> bool:
    """model.onnx and model.int8.onnx into `folder`. Unless `required`, a network the exporter cannot
    trace leaves the folder without them (predict and serve then run torch), with a warning."""
    from emotion_lab.inference.onnx import export_onnx, quantize_onnx

    try:
        export_onnx(predictor.net, predictor.tokenizer, folder / ONNX_FILE, max_length=predictor.max_length)
        quantize_onnx(folder / ONNX_FILE, folder / ONNX_INT8_FILE)
    except Exception as err:
        if required:
            raise
        for name in (ONNX_FILE, ONNX_INT8_FILE):
            (folder / name).unlink(missing_ok=True)
        log.warning("no ONNX files written (%s: %s); predict and serve will run torch", type(err).__name__, err)
        return False
    return True
