import pytest
import torch
import torch.nn.functional as F

from emotion_lab.errors import ConfigError
from emotion_lab.models.losses import CrossEntropyLoss, DistillationLoss, FocalLoss, class_weights, consistency_kl


@pytest.fixture
def batch():
    torch.manual_seed(0)
    return torch.randn(64, 6) * 3, torch.randint(0, 6, (64,))


def test_focal_at_gamma_zero_is_cross_entropy(batch):
    logits, target = batch
    assert torch.allclose(FocalLoss(gamma=0.0)(logits, target), F.cross_entropy(logits, target), atol=1e-6)
    assert torch.allclose(CrossEntropyLoss()(logits, target), F.cross_entropy(logits, target), atol=1e-6)


def test_focal_matches_its_definition(batch):
    logits, target = batch
    p = logits.softmax(-1)[torch.arange(len(target)), target]
    alpha = torch.tensor([0.5, 1.0, 2.0, 1.5, 1.0, 3.0])
    expected = (-alpha[target] * (1 - p) ** 2 * p.log()).mean()
    got = FocalLoss(gamma=2.0, alpha=alpha)(logits, target)
    assert torch.allclose(got, expected, atol=1e-6)


def test_focal_downweights_easy_examples():
    target = torch.tensor([0])
    easy, hard = torch.tensor([[5.0, 0, 0, 0, 0, 0]]), torch.tensor([[0.0, 2, 0, 0, 0, 0]])
    focal, ce = FocalLoss(gamma=2.0), FocalLoss(gamma=0.0)
    assert focal(easy, target) / ce(easy, target) < focal(hard, target) / ce(hard, target)


def test_label_smoothing_at_gamma_zero_matches_torch(batch):
    logits, target = batch
    expected = F.cross_entropy(logits, target, label_smoothing=0.1)
    assert torch.allclose(FocalLoss(gamma=0.0, label_smoothing=0.1)(logits, target), expected, atol=1e-6)


def test_inverse_frequency_weights_favour_rare_classes():
    weights = class_weights("inverse_frequency", [400, 100, 100, 100, 100, 10])
    assert weights[5] > weights[1] > weights[0]
    # Averaged over the training examples the weights are 1: the loss keeps its scale.
    counts = torch.tensor([400.0, 100, 100, 100, 100, 10])
    assert torch.allclose((weights * counts).sum() / counts.sum(), torch.tensor(1.0))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"alpha": "balanced"}, "allowed values"),
        ({"alpha": [1.0, 2.0]}, "6 non-negative floats"),
        ({"gamma": -1.0}, "gamma"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
    ],
)
def test_bad_loss_options_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        FocalLoss(**kwargs)


def test_inverse_frequency_waits_for_the_training_split_counts(batch):
    logits, target = batch
    loss = FocalLoss(gamma=0.0, alpha="inverse_frequency")
    with pytest.raises(ConfigError, match="class counts"):
        loss(logits, target)
    counts = [400, 100, 100, 100, 100, 10]
    loss.set_class_counts(counts)
    expected = F.cross_entropy(logits, target, weight=class_weights("inverse_frequency", counts), reduction="none")
    assert torch.allclose(loss(logits, target), expected.mean(), atol=1e-6)


def test_consistency_kl_is_the_mean_of_both_kl_directions(batch):
    logits, _ = batch
    other = logits.flip(0)
    p, q = logits.softmax(-1), other.softmax(-1)
    kl_pq = (p * (p / q).log()).sum(-1).mean()
    kl_qp = (q * (q / p).log()).sum(-1).mean()
    assert torch.allclose(consistency_kl(logits, other), (kl_pq + kl_qp) / 2, atol=1e-5)
    assert consistency_kl(logits, logits).item() == pytest.approx(0.0, abs=1e-6)


def test_distillation_with_weight_zero_is_the_focal_loss(batch):
    logits, target = batch
    teacher = torch.randn(len(target), 2, logits.shape[1])
    assert torch.allclose(
        DistillationLoss(weight=0.0, gamma=2.0)(logits, target, teacher), FocalLoss(gamma=2.0)(logits, target)
    )


def test_distillation_from_a_one_hot_teacher_at_t1_adds_the_cross_entropy(batch):
    logits, target = batch
    one_hot = F.one_hot(target, logits.shape[1]).float()[:, None] * 1e4  # softmax of it: the one-hot exactly
    loss = DistillationLoss(weight=0.5, temperature=1.0, gamma=2.0)(logits, target, one_hot)
    expected = FocalLoss(gamma=2.0)(logits, target) + 0.5 * F.cross_entropy(logits, target)
    assert torch.allclose(loss, expected, atol=1e-6)


def test_distillation_targets_the_ensembles_mean_probability_at_temperature(batch):
    logits, target = batch
    teachers = torch.randn(len(target), 3, logits.shape[1])
    t = 2.5
    mean = F.softmax(teachers / t, dim=-1).mean(dim=1)
    kl = (mean * (mean.log() - F.log_softmax(logits / t, dim=-1))).sum(-1).mean()
    loss = DistillationLoss(weight=0.7, temperature=t, gamma=0.0)(logits, target, teachers)
    assert torch.allclose(loss, F.cross_entropy(logits, target) + 0.7 * t * t * kl, atol=1e-5)
    # Evaluation batches carry no teacher: the label term alone.
    assert torch.allclose(DistillationLoss(weight=0.7)(logits, target), FocalLoss()(logits, target))


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"weight": -1}, "loss.weight"), ({"temperature": 0}, "loss.temperature")]
)
def test_bad_distillation_options_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DistillationLoss(**kwargs)
