"""Temperature scaling and calibration scores on synthetic cases whose answer is known."""

import pytest
import torch

from emotion_lab.models.calibration import calibration_scores, fit_temperature


def synthetic(sharpness: float, n: int = 4000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose calibrated scale is 1: labels are drawn from softmax(base); `sharpness` rescales them."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 6, generator=generator) * 2
    targets = torch.multinomial(base.softmax(-1), 1, generator=generator).squeeze(1)
    return base * sharpness, targets


@pytest.mark.parametrize(("sharpness", "expected"), [(3.0, 3.0), (0.5, 0.5)])
def test_temperature_undoes_over_and_underconfidence(sharpness, expected):
    logits, targets = synthetic(sharpness)
    temperature = fit_temperature(logits, targets)
    assert temperature == pytest.approx(expected, rel=0.1)
    before, after = calibration_scores(logits, targets), calibration_scores(logits, targets, temperature)
    assert after["nll"] < before["nll"] and after["ece"] < before["ece"]
    assert torch.equal((logits / temperature).argmax(-1), logits.argmax(-1))  # the labels never change


def test_calibrated_logits_keep_a_temperature_near_one():
    logits, targets = synthetic(1.0)
    assert fit_temperature(logits, targets) == pytest.approx(1.0, abs=0.1)


def test_ece_of_a_certain_model_that_is_right_half_the_time():
    logits = torch.tensor([[20.0, 0, 0, 0, 0, 0]] * 4)  # confidence ~1.0 on class 0
    targets = torch.tensor([0, 0, 1, 2])
    scores = calibration_scores(logits, targets)
    assert scores["ece"] == pytest.approx(0.5, abs=1e-3)
    assert scores["nll"] == pytest.approx(10.0, abs=0.01)  # two of four cost 20 nats each
