"""The LightningModule: wires an injected network to the loss, optimiser, schedule and metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import CatMetric, MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)
from torchmetrics.wrappers import ClasswiseWrapper

from emotion_lab.errors import ConfigError, TrainingDivergedError
from emotion_lab.labels import LABELS, NUM_CLASSES
from emotion_lab.models.calibration import calibration_scores, fit_temperature
from emotion_lab.models.checkpoint_state import partial_config, restore_extras, save_extras
from emotion_lab.models.loading import weights_digest
from emotion_lab.models.losses import CrossEntropyLoss, consistency_kl
from emotion_lab.models.optim import WarmupSchedule, encoder_groups

log = logging.getLogger(__name__)

# Consecutive optimizer steps with non-finite gradients after which training is given up as diverged.
MAX_SKIPPED_IN_A_ROW = 25

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


class EmotionClassifier(L.LightningModule):
    """Trains any `EmotionNet`.

    Everything it trains with comes from config (`conf/model/default.yaml`, `conf/loss/` in emotion_lab/): the network
    (`net`), the loss and the optimizer as `_partial_` factories, the warm-up schedule. The encoder
    and the freshly initialised head learn at their own rates (`encoder_lr`, the optimizer's `lr`).
    The network's and the loss's configs go into the checkpoint as plain data, so
    `models.checkpoints.load_classifier` rebuilds the model without Hydra.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: Callable[[], nn.Module] | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: WarmupSchedule | None = None,
        encoder_lr: float = 5e-5,
        layer_decay: float = 1.0,
        rdrop: float = 0.0,
        rdrop_scope: str = "network",
        reference_frozen_encoder: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        # Without a configured loss (a model rebuilt only to predict), the plain cross-entropy.
        try:
            self.loss_fn = loss() if loss is not None else CrossEntropyLoss()
        except TypeError as err:  # an option the chosen loss does not have, e.g. loss=ce +loss.gamma=2
            raise ConfigError(f"loss: {err}") from None
        self.optimizer_factory = optimizer
        self.schedule = scheduler
        if not 0.0 < layer_decay <= 1.0:
            raise ConfigError(f"model.layer_decay={layer_decay}: must be in (0, 1] (1 = off)")
        # R-Drop is a training objective over two passes, not a per-batch criterion: the module runs it.
        if rdrop < 0:
            raise ConfigError(f"model.rdrop={rdrop}: must be >= 0 (0 = off)")
        if rdrop_scope not in RDROP_SCOPES:
            raise ConfigError(f"model.rdrop_scope={rdrop_scope!r}: allowed values are {RDROP_SCOPES}")
        self.rdrop = float(rdrop)
        self.rdrop_scope = rdrop_scope
        # Checkpoints name a frozen, published encoder (and its digest) instead of copying it: lean sweep trials.
        self.reference_frozen_encoder = reference_frozen_encoder and net.freeze_encoder and net.pretrained
        self._encoder_digest: str | None = None
        self.save_hyperparameters(
            {
                "net": dict(getattr(net, "config", {})),
                "loss": partial_config(loss),
                "optimizer": partial_config(optimizer),
                "scheduler": vars(scheduler) if scheduler is not None else None,
                "encoder_lr": encoder_lr,
                "layer_decay": layer_decay,
                "rdrop": self.rdrop,
                "rdrop_scope": rdrop_scope,
            }
        )
        self.train_loss = MeanMetric()
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.val_metrics = stage_metrics("val")
        self.test_metrics = stage_metrics("test")
        self.val_f1_best = MaxMetric()
        self.skipped_steps = 0
        self.skipped_in_a_row = 0
        # Fitted on each validation's logits while training (so a checkpoint carries the temperature of its
        # weights), or by a validation of a model that has none yet (None: from before calibration).
        self.calibration_temperature: float | None = None
        # Every process's logits, gathered on compute(): the temperature and ECE see the whole split under DDP.
        self.val_logits, self.val_targets = CatMetric(), CatMetric()
        self.test_logits, self.test_targets = CatMetric(), CatMetric()

    @staticmethod
    def metric_names() -> set[str]:
        """Every metric name a training run logs: what `optimized_metric` may name."""
        names = {"train/loss", "train/loss_epoch", "train/skipped_steps", "val/loss", "test/loss"}
        names |= {"val/f1_weighted_best", "val/temperature", "val/nll", "val/ece"}
        names |= {"test/nll", "test/ece", "test/nll_calibrated", "test/ece_calibrated"}
        for stage in ("val", "test"):
            names |= set(stage_metrics(stage).keys())
            for kind in ("f1", "precision", "recall"):
                names |= {f"{stage}_{kind}/{label}" for label in LABELS}
        return names

    def setup(self, stage: str) -> None:
        if self.reference_frozen_encoder and self._encoder_digest is None:
            # Now, before a precision plugin may convert the weights: the digest is of the published ones.
            self._encoder_digest = weights_digest(self.net.encoder)
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:  # loaders passed to fit directly: token-id batches, no teacher
            return
        if datamodule.feature_cache_layer is not None:
            self.cache_layer = self._check_cache_layer(datamodule.feature_cache_layer)
        self._check_teacher(datamodule.teacher_logits_file, stage)
        if hasattr(self.loss_fn, "set_class_counts"):
            self.loss_fn.set_class_counts(datamodule.class_counts)  # losses whose weights follow the training split

    def _check_teacher(self, teacher_logits_file: str | None, stage: str) -> None:
        """A distillation loss needs teacher logits in the training batches, and teacher logits need it."""
        wants = getattr(self.loss_fn, "uses_teacher", False)
        if stage == "fit" and wants and not teacher_logits_file:
            raise ConfigError(
                "loss=distill needs data.teacher_logits=<file>: use experiment=distilled_cpu (the committed "
                "teacher logits), or train a teacher (experiment=teacher_mpnet) and run python -m "
                "emotion_lab.tools.teacher_logits <its checkpoints> --out <file>"
            )
        if stage == "fit" and teacher_logits_file and not wants:
            raise ConfigError(
                f"data.teacher_logits={teacher_logits_file!r} is set but loss "
                f"{type(self.loss_fn).__name__} does not use a teacher; add loss=distill or drop data.teacher_logits"
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
                    else f"model.net.frozen_layers={layer}"
                )
            )
        return layer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.net(input_ids, attention_mask)

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The network's logits for a batch of token ids, or of cached encoder states."""
        if "hidden" in batch:  # cached encoder states: only what lies above the cached layer runs
            return self.net.forward_from_layer(batch["hidden"], batch["attention_mask"], self.cache_layer)
        return self(batch["input_ids"], batch["attention_mask"])

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits(batch)
        if "teacher_logits" in batch:
            return self.loss_fn(logits, batch["labels"], batch["teacher_logits"]), logits
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
        twice = [torch.cat([batch[key], batch[key]]) for key in ("labels", "teacher_logits") if key in batch]
        return self.loss_fn(logits, *twice), logits

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        """Clip as configured, and skip any step whose gradients are not finite.

        Under bf16 autocast on a GPU, one non-finite gradient turned every weight NaN
        (docs/experiments/2026-11-26-recipe-search.md): clipping spreads one NaN to every gradient and
        AdamW writes it into every weight. A skipped step leaves the weights as they were, as fp16's GradScaler
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
                    "non-finite gradients; lower model.optimizer.lr / model.encoder_lr, or trainer.precision=32-true"
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
        self.val_logits.update(logits.detach().float())
        self.val_targets.update(batch["labels"])
        return {"preds": logits.argmax(-1), "targets": batch["labels"]}

    def on_validation_epoch_end(self) -> None:
        metrics = self.val_metrics.compute()
        self.val_metrics.reset()
        self.val_f1_best(metrics["val/f1_weighted"])
        self.log("val/loss", self.val_loss, prog_bar=True)
        self.log_dict(metrics, prog_bar=False)
        self.log("val/f1_weighted_best", self.val_f1_best.compute(), prog_bar=True)
        logits, targets = self._gathered(self.val_logits, self.val_targets)
        if logits is None or self.trainer.sanity_checking:
            return
        if not torch.isfinite(logits).all():
            log.warning("validation logits are not finite: temperature not fitted")
        elif self.trainer.state.fn == "fit" or self.calibration_temperature is None:
            self.calibration_temperature = fit_temperature(logits, targets)
        if self.calibration_temperature is not None:
            self.log("val/temperature", self.calibration_temperature)
            self.log_dict({f"val/{k}": v for k, v in calibration_scores(logits, targets).items()})

    @staticmethod
    def _gathered(logits: CatMetric, targets: CatMetric) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The stage's logits and targets from every process, then reset; (None, None) when it saw none."""
        if not logits.update_count:
            return None, None
        gathered = logits.compute().cpu(), targets.compute().cpu().long()  # CatMetric stores floats
        logits.reset()
        targets.reset()
        return gathered

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        loss, logits = self._step(batch)
        self.test_loss(loss, weight=batch["labels"].numel())
        self.test_metrics.update(logits, batch["labels"])
        self.test_logits.update(logits.detach().float())
        self.test_targets.update(batch["labels"])
        return {"preds": logits.argmax(-1), "targets": batch["labels"], "logits": logits.detach()}

    def on_test_epoch_end(self) -> None:
        metrics = self.test_metrics.compute()
        self.test_metrics.reset()
        self.log("test/loss", self.test_loss)
        self.log_dict(metrics)
        logits, targets = self._gathered(self.test_logits, self.test_targets)
        if logits is not None and torch.isfinite(logits).all():
            raw = calibration_scores(logits, targets)
            calibrated = calibration_scores(logits, targets, self.calibration_temperature or 1.0)
            self.log_dict({f"test/{k}": v for k, v in raw.items()})
            self.log_dict({f"test/{k}_calibrated": v for k, v in calibrated.items()})

    def configure_optimizers(self) -> dict[str, Any]:
        if self.optimizer_factory is None:
            raise ConfigError("model.optimizer: none configured; this model was built to predict, not to train")
        head = [{"params": self.net.head_parameters()}]  # at the optimizer's own lr
        encoder = encoder_groups(self.net, self.hparams.encoder_lr, self.hparams.layer_decay)
        try:
            optimizer = self.optimizer_factory(params=head + encoder)
        except TypeError as err:  # an option the optimizer does not have, e.g. +model.optimizer.momentum=0.9
            raise ConfigError(f"model.optimizer: {err}") from None
        if self.schedule is None:
            return {"optimizer": optimizer}
        schedule = self.schedule(optimizer, self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        save_extras(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        restore_extras(self, checkpoint)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if getattr(self, "_resume_rng", None) is not None:
            torch.set_rng_state(self._resume_rng)
            if batch_idx == 0:
                # Resumed at an epoch's start: an uninterrupted run drew the new loader iterator's base seed
                # from the global generator here; within an epoch it draws nothing (tests/test_resume.py).
                torch.empty((), dtype=torch.int64).random_()
            self._resume_rng = None
