"""Word attributions by integrated gradients: the right words, merged from word-pieces, on fp32 weights."""

import pytest
import torch
from torch import nn

from emotion_lab.encoders.loading import load_tokenizer
from emotion_lab.inference.explain import Explainer
from emotion_lab.inference.predictor import EmotionPredictor
from emotion_lab.labels import LABELS


class _Embeddings(nn.Module):
    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab_size, 1)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.table


class CueNet(nn.Module):
    """joy's logit is 3 x (how often the cue word-pieces occur); every other logit is 0. Only the cues have
    a non-zero embedding, so all the attribution belongs to them."""

    def __init__(self, vocab_size: int, cue_ids: list[int]) -> None:
        super().__init__()
        self.encoder = _Embeddings(vocab_size)
        with torch.no_grad():
            self.encoder.table.weight.zero_()
            self.encoder.table.weight[cue_ids] = 3.0

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        joy = (self.encoder.table(ids).squeeze(-1) * mask).sum(-1)
        logits = torch.zeros(len(ids), len(LABELS))
        logits[:, LABELS.index("joy")] = joy
        return logits


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder):
    return load_tokenizer(tiny_encoder)


def test_the_attribution_goes_to_the_word_that_decides_and_sums_to_the_probability_gained(tokenizer):
    text = "today i feel unbelievably happy, truly"
    pieces = tokenizer.tokenize("unbelievably")
    assert len(pieces) > 1  # a word of several word-pieces: their scores must be summed into it
    net = CueNet(tokenizer.vocab_size, tokenizer.convert_tokens_to_ids(pieces))
    (explanation,) = Explainer(net, tokenizer, LABELS, max_length=32, steps=64).explain([text])

    assert [w.text for w in explanation.words] == ["today", "i", "feel", "unbelievably", "happy", ",", "truly"]
    assert all(text[w.start : w.end] == w.text for w in explanation.words)
    scores = {w.text: w.score for w in explanation.words}
    assert explanation.label == "joy"
    gained = explanation.prob - explanation.baseline_prob
    assert gained > 0.5
    assert scores["unbelievably"] == pytest.approx(gained, abs=1e-3)
    assert all(score == 0.0 for word, score in scores.items() if word != "unbelievably")
    assert abs(explanation.delta) < 1e-3


def test_scores_sum_to_the_probability_gained_up_to_the_reported_error(tiny_model):
    predictor = EmotionPredictor.from_pretrained(tiny_model)
    for explanation in predictor.explain(["i feel happy", "what a lovely surprise", "he lied to me again!"]):
        total = sum(w.score for w in explanation.words)
        assert total - (explanation.prob - explanation.baseline_prob) == pytest.approx(explanation.delta, abs=1e-5)
        probs = predictor(" ".join(w.text for w in explanation.words)).probs
        assert explanation.label == max(probs, key=probs.get)


def test_onnx_and_int8_predictors_explain_with_the_fp32_network_of_their_folder(tiny_model, tiny_onnx_model):
    text = ["i feel rather scared of the dark"]
    expected = EmotionPredictor.from_pretrained(tiny_model).explain(text)[0]
    for predictor in (
        EmotionPredictor.from_pretrained(tiny_onnx_model, backend="onnx"),
        EmotionPredictor.from_pretrained(tiny_model, int8=True),
    ):
        got = predictor.explain(text)[0]
        assert [w.text for w in got.words] == [w.text for w in expected.words]
        assert [w.score for w in got.words] == pytest.approx([w.score for w in expected.words], abs=1e-6)


def test_a_quantized_predictor_without_a_source_says_what_to_do(tiny_model):
    predictor = EmotionPredictor.from_pretrained(tiny_model, int8=True)
    predictor.source = None
    with pytest.raises(Exception, match="load it without int8"):
        predictor.explain(["i feel fine"])


def test_a_word_the_vocabulary_lacks_is_scored_too(tokenizer):
    text = "i feel 🦜 today"
    assert tokenizer.unk_token in tokenizer.tokenize(text)
    net = CueNet(tokenizer.vocab_size, [tokenizer.unk_token_id])
    (explanation,) = Explainer(net, tokenizer, LABELS, max_length=32, steps=64).explain([text])
    scores = {w.text: w.score for w in explanation.words}
    assert list(scores) == ["i", "feel", "🦜", "today"]
    gained = explanation.prob - explanation.baseline_prob
    assert gained > 0.5 and scores["🦜"] == pytest.approx(gained, abs=1e-3)


def test_a_model_that_cannot_be_explained_is_one_line_a_command_prints(tokenizer):
    from types import SimpleNamespace

    from emotion_lab.errors import UserInputError
    from emotion_lab.inference.explain import NotExplainable

    net = CueNet(tokenizer.vocab_size, [0])
    slow = SimpleNamespace(is_fast=False)
    with pytest.raises(UserInputError, match=r"^explanations need a fast tokenizer \(word boundaries\)$"):
        Explainer(net, slow, LABELS, max_length=32)
    with pytest.raises(NotExplainable, match=r"^explanations need net.encoder.get_input_embeddings\(\); Linear has"):
        Explainer(nn.Linear(2, 6), tokenizer, LABELS, max_length=32)
    assert issubclass(NotExplainable, ValueError)  # the server's worker answers it 422, as before
