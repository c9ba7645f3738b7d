"""The LightningModule: wires an injected network to the loss, optimiser, schedule and metrics."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)
from torchmetrics.wrappers import ClasswiseWrapper
from transformers import get_scheduler

from emotion_lab.data.labels import ID2LABEL, LABELS, NUM_CLASSES
from emotion_lab.errors import ConfigError, ModelLoadError, TrainingDivergedError
from emotion_lab.losses import build_loss, consistency_kl

log = logging.getLogger(__name__)

# Consecutive optimizer steps with non-finite gradients after which training is given up as diverged.
MAX_SKIPPED_IN_A_ROW = 25

SCHEDULES = ("linear", "cosine", "constant")
RDROP_SCOPES = ("network", "head")


def stage_metrics(stage: str) -> MetricCollection:
    """Epoch-level metrics for one stage, accumulated over all its batches by torchmetrics."""
    labels = list(LABELS)
    return MetricCollection(
        {
            f"{stage}/acc": MulticlassAccuracy(NUM_CLASSES, average="micro"),
            f"{stage}/f1_weighted": MulticlassF1Score(NUM_CLASSES, average="weighted"),
            f"{stage}/f1_macro": MulticlassF1Score(NUM_CLASSES, average="macro"),
            # One scalar per class in its own TensorBoard group, e.g. val_f1/love.
            f"{stage}_f1": ClasswiseWrapper(
                MulticlassF1Score(NUM_CLASSES, average=None), labels, prefix=f"{stage}_f1/"
            ),
            f"{stage}_precision": ClasswiseWrapper(
                MulticlassPrecision(NUM_CLASSES, average=None), labels, prefix=f"{stage}_precision/"
            ),
            f"{stage}_recall": ClasswiseWrapper(
                MulticlassRecall(NUM_CLASSES, average=None), labels, prefix=f"{stage}_recall/"
            ),
        },
        compute_groups=False,
    )


def criterion_options(loss: dict[str, Any]) -> dict[str, Any]:
    """The `loss` config's options for the per-batch criterion (`build_loss`)."""
    return {key: value for key, value in loss.items() if key not in ("rdrop", "rdrop_scope")}


class EmotionClassifier(L.LightningModule):
    """Trains any `EmotionNet`.

    `loss`, `optimizer` and `scheduler` are plain dicts (they are stored in the checkpoint and shown
    in TensorBoard's hparams view); the loss is built in `setup` because inverse-frequency weights
    need the training split. The network's own `config` goes into the checkpoint too, so
    `load_classifier(path)` rebuilds everything without Hydra.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: dict | None = None,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        loss = dict(loss or {"name": "focal", "gamma": 2.0})
        optimizer = {
            "lr": 1e-3,
            "encoder_lr": 5e-5,
            "weight_decay": 0.01,
            "layer_decay": 1.0,
            "fused": True,
            **(optimizer or {}),
        }
        scheduler = {"name": "linear", "warmup_ratio": 0.06, **(scheduler or {})}
        if scheduler["name"] not in SCHEDULES:
            raise ConfigError(f"model.scheduler.name={scheduler['name']!r}: allowed values are {SCHEDULES}")
        if not 0.0 < optimizer["layer_decay"] <= 1.0:
            raise ConfigError(f"model.optimizer.layer_decay={optimizer['layer_decay']}: must be in (0, 1] (1 = off)")
        if not 0.0 <= scheduler["warmup_ratio"] < 1.0:
            raise ConfigError(f"model.scheduler.warmup_ratio={scheduler['warmup_ratio']}: must be in [0, 1)")
        # R-Drop is a training objective over two passes, not a per-batch criterion: the module runs it.
        self.rdrop = float(loss.get("rdrop", 0.0))
        self.rdrop_scope = loss.get("rdrop_scope", "network")
        if self.rdrop < 0:
            raise ConfigError(f"loss.rdrop={self.rdrop}: must be >= 0 (0 = off)")
        if self.rdrop_scope not in RDROP_SCOPES:
            raise ConfigError(f"loss.rdrop_scope={self.rdrop_scope!r}: allowed values are {RDROP_SCOPES}")
        # Build once now so a bad loss option fails before training (alpha needing counts is rebuilt in setup).
        self.loss_fn = build_loss(**{**criterion_options(loss), "alpha": None})
        self.save_hyperparameters(
            {"loss": loss, "optimizer": optimizer, "scheduler": scheduler, "net": dict(getattr(net, "config", {}))}
        )
        self.train_loss = MeanMetric()
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.val_metrics = stage_metrics("val")
        self.test_metrics = stage_metrics("test")
        self.val_f1_best = MaxMetric()
        self.skipped_steps = 0
        self.skipped_in_a_row = 0

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if getattr(datamodule, "uses_feature_cache", False):
            self.cache_layer = self._check_cache_layer(datamodule.hparams.feature_cache.get("layer", -1))
        if self.hparams.loss.get("alpha") not in (None, "none"):
            self.loss_fn = build_loss(
                **criterion_options(self.hparams.loss), class_counts=getattr(datamodule, "class_counts", None)
            )

    def _check_cache_layer(self, layer: int) -> int:
        """The encoder layer the cached states come from; nothing trainable may lie below it."""
        depth = self.net.encoder.config.num_hidden_layers
        layer = depth if layer == -1 else layer
        if self.net.frozen_depth < layer:
            raise ConfigError(
                f"data.feature_cache.layer={layer} stores states after encoder layer {layer}, but the network "
                f"fine-tunes weights below it (model.net.frozen_layers={self.net.frozen_layers}, "
                f"freeze_encoder={self.net.freeze_encoder}): they could not learn. Set "
                + (
                    "model.net.freeze_encoder=true (experiment=cached_head)"
                    if layer == depth
                    else f"model.net.frozen_layers={layer} (experiment=cached_upper)"
                )
            )
        return layer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.net(input_ids, attention_mask)

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if "hidden" in batch:  # cached encoder states: only what lies above the cached layer runs
            logits = self.net.forward_from_layer(batch["hidden"], batch["attention_mask"], self.cache_layer)
        else:
            logits = self(batch["input_ids"], batch["attention_mask"])
        return self.loss_fn(logits, batch["labels"]), logits

    def on_train_start(self) -> None:
        # Lightning's sanity check runs validation first: drop what it accumulated.
        self.val_loss.reset()
        self.val_metrics.reset()
        self.val_f1_best.reset()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.rdrop:
            loss, logits = self._two_dropout_passes(batch)
            loss = loss + self.rdrop * consistency_kl(*logits.chunk(2))
        else:
            loss, _ = self._step(batch)
        self.train_loss(loss)
        self.log(
            "train/loss",
            self.train_loss,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=batch["labels"].numel(),
        )
        return loss

    def _two_dropout_passes(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """R-Drop's two passes as one forward over the batch stacked on itself: every row draws its own
        dropout masks, and the criterion's batch mean is the mean of the two passes' losses. With
        scope `head` the encoder runs once and only the head (LSTM, attention, classifier) twice."""
        if self.rdrop_scope == "network" or "hidden" in batch:
            return self._step({key: torch.cat([value, value]) for key, value in batch.items()})
        hidden, mask = self.net.encode(batch["input_ids"], batch["attention_mask"])
        logits = self.net.head(torch.cat([hidden, hidden]), torch.cat([mask, mask]))
        return self.loss_fn(logits, torch.cat([batch["labels"], batch["labels"]])), logits

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        """Clip as configured, and skip any step whose gradients are not finite.

        Under bf16 autocast on an H200, 9 of 24 recipe-search runs had every weight turn NaN (README,
        "Recipe search on a lent GPU"): clipping spreads one NaN to every gradient and AdamW writes
        it into every weight. A skipped step leaves the weights as they were, as fp16's GradScaler
        does; many in a row mean the run has diverged, and it stops with a one-line error (a failed
        trial in a sweep).
        """
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        by_norm = gradient_clip_val and gradient_clip_algorithm in (None, "norm")
        norm = torch.nn.utils.clip_grad_norm_(params, gradient_clip_val if by_norm else float("inf"))
        if not torch.isfinite(norm):
            optimizer.zero_grad(set_to_none=True)  # AdamW leaves parameters without a gradient untouched
            self.skipped_steps += 1
            self.skipped_in_a_row += 1
            log.warning("step %d: non-finite gradient norm, step skipped", self.global_step)
            if self.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
                raise TrainingDivergedError(
                    f"training diverged: {self.skipped_in_a_row} steps in a row up to step {self.global_step} had "
                    "non-finite gradients; lower model.optimizer.lr / encoder_lr, or set trainer.precision=32-true"
                )
            return
        self.skipped_in_a_row = 0
        if gradient_clip_val and not by_norm:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_train_epoch_end(self) -> None:
        self.log("train/skipped_steps", float(self.skipped_steps))

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        loss, logits = self._step(batch)
        self.val_loss(loss, weight=batch["labels"].numel())
        self.val_metrics.update(logits, batch["labels"])
        return {"preds": logits.argmax(-1), "targets": batch["labels"]}

    def on_validation_epoch_end(self) -> None:
        metrics = self.val_metrics.compute()
        self.val_metrics.reset()
        self.val_f1_best(metrics["val/f1_weighted"])
        self.log("val/loss", self.val_loss, prog_bar=True)
        self.log_dict(metrics, prog_bar=False)
        self.log("val/f1_weighted_best", self.val_f1_best.compute(), prog_bar=True)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        loss, logits = self._step(batch)
        self.test_loss(loss, weight=batch["labels"].numel())
        self.test_metrics.update(logits, batch["labels"])
        return {"preds": logits.argmax(-1), "targets": batch["labels"]}

    def on_test_epoch_end(self) -> None:
        metrics = self.test_metrics.compute()
        self.test_metrics.reset()
        self.log("test/loss", self.test_loss)
        self.log_dict(metrics)

    def configure_optimizers(self) -> dict[str, Any]:
        opt = self.hparams.optimizer
        groups = [{"params": self.net.head_parameters(), "lr": opt["lr"]}] + self._encoder_groups()
        optimizer = torch.optim.AdamW(groups, weight_decay=opt["weight_decay"], fused=opt["fused"])
        sched = self.hparams.scheduler
        total = self.trainer.estimated_stepping_batches
        schedule = get_scheduler(
            sched["name"], optimizer, num_warmup_steps=int(sched["warmup_ratio"] * total), num_training_steps=total
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def _encoder_groups(self) -> list[dict[str, Any]]:
        """The encoder's parameter groups. With layer-wise decay d < 1 the top layer learns at
        `encoder_lr`, each layer below at d times the one above, the embeddings least: the lower
        layers hold the general-purpose features that fine-tuning should disturb least."""
        lr, decay = self.hparams.optimizer["encoder_lr"], self.hparams.optimizer["layer_decay"]
        if decay == 1.0:  # one group, as before the option: earlier checkpoints' optimizer states still resume
            params = self.net.encoder_parameters()
            return [{"params": params, "lr": lr}] if params else []
        by_depth = self.net.encoder_parameters_by_depth()
        top = len(by_depth) - 1
        return [
            {"params": params, "lr": lr * decay ** (top - depth)} for depth, params in enumerate(by_depth) if params
        ]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["id2label"] = dict(ID2LABEL)


def load_classifier(ckpt_path: str | Path, map_location: str | torch.device = "cpu") -> EmotionClassifier:
    """Rebuild a classifier from a Lightning checkpoint alone (no Hydra composition, no unpickling)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise ModelLoadError(f"ckpt_path={str(ckpt_path)!r}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ModelLoadError(f"{path}: not a readable emotion_lab checkpoint ({type(err).__name__}: {err})") from None
    hparams = checkpoint.get("hyper_parameters", {})
    if "net" not in hparams or "_target_" not in hparams.get("net", {}):
        raise ModelLoadError(
            f"{path}: a Lightning checkpoint without an emotion_lab network config (hyper_parameters.net)"
        )
    net = hydra.utils.instantiate({**hparams["net"], "pretrained": False})
    model = EmotionClassifier(
        net, loss=hparams.get("loss"), optimizer=hparams.get("optimizer"), scheduler=hparams.get("scheduler")
    )
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
