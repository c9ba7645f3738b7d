"""Export a trained checkpoint as a self-contained model folder, optionally with ONNX graphs.

    python -m emotion_lab.export ckpt_path=outputs/best_cpu/runs/<time>/checkpoints/<best>.ckpt out=models/emotion
    python -m emotion_lab.export ckpt_path=models/emotion out=models/emotion onnx=true   # add ONNX to a folder

The folder loads with `EmotionPredictor.from_pretrained(out)` (no Hydra, Lightning or training
data needed) and with `python -m emotion_lab.predict out`. Training exports its best checkpoint to
`<run>/model` itself (`export: true` in emotion_lab/conf/train.yaml). `onnx=true` adds `model.onnx` (fp32,
dynamic batch and length, checked against the torch logits) and `model.int8.onnx` (onnxruntime's
dynamic quantization); it needs the `onnx` extra.

The folder is written beside `out` and swapped in whole: an export that fails leaves the old folder
as it was. `out` must be new, empty or a model folder, since its old contents are replaced.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from emotion_lab.inference.export import export
from emotion_lab.utils.config import CONFIG_DIR
from emotion_lab.utils.runtime import run_task


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    run_task(
        lambda c: export(
            c.ckpt_path, c.out, trusted_modules=list(c.trusted_modules), onnx=c.onnx, allow_download=c.allow_download
        ),
        cfg,
    )


if __name__ == "__main__":
    main()
