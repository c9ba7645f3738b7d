"""Word attributions that explain a prediction: integrated gradients over the encoder's token embeddings.

    explainer = Explainer(net, tokenizer, labels, max_length=128, temperature=1.2)
    explainer.explain(["i feel so happy today"])   # one Explanation per text: words with their scores

Captum's `LayerIntegratedGradients` integrates the gradient of the predicted label's probability
(softmax(logits / temperature), as the predictor reports it) along the straight line from a baseline to
the sentence, in the space of the token embeddings. The baseline is the same sentence with every word's
word-pieces ([UNK] included) replaced by the padding token ([CLS] and [SEP] kept), so the scores of a
sentence's word-pieces sum to p(label | sentence) - p(label | padding) up to the integration error
(`Explanation.delta`). A word's score is the sum over its word-pieces: > 0 supports the label, < 0
speaks against it.

Gradients need the torch network in fp32: an ONNX or int8 predictor explains with the fp32 network of
its folder (`EmotionPredictor.explain`). Attention weights remain available as what they are
(`EmotionPredictor.word_attention`); they are not attributions (docs/explanations.md measures both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from emotion_lab.errors import UserInputError

METHOD = "integrated gradients"


class NotExplainable(UserInputError, ValueError):
    """A model whose predictions cannot be explained this way (a tokenizer without word boundaries, a
    network without token embeddings to integrate over)."""


@dataclass
class WordScore:
    """A word as it stands in the text (`text[start:end]`) and its attribution."""

    text: str
    start: int
    end: int
    score: float


@dataclass
class Explanation:
    label: str  # the predicted label, the one explained
    prob: float  # its probability
    words: list[WordScore]  # in text order; words past max_length are not read by the model and not listed
    baseline_prob: float  # the label's probability for the all-padding baseline
    delta: float  # sum of the scores minus (prob - baseline_prob): the integration error
    method: str = METHOD

    def as_json(self) -> dict:
        return {
            "method": self.method,
            "label": self.label,
            "prob": self.prob,
            "baseline_prob": self.baseline_prob,
            "delta": self.delta,
            "words": [{"text": w.text, "start": w.start, "end": w.end, "score": w.score} for w in self.words],
        }


class Explainer:
    """Integrated-gradients word attributions for one fp32 torch network (see the module docstring).
    `steps`: points on the path (more: smaller `delta`, proportionally slower)."""

    def __init__(
        self,
        net: nn.Module,
        tokenizer,
        labels: Sequence[str],
        max_length: int,
        temperature: float = 1.0,
        steps: int = 32,
    ) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise NotExplainable("explanations need a fast tokenizer (word boundaries)")
        embeddings = getattr(getattr(net, "encoder", None), "get_input_embeddings", None)
        if embeddings is None:
            raise NotExplainable(f"explanations need net.encoder.get_input_embeddings(); {type(net).__name__} has none")
        self.net = net.eval()
        self.tokenizer = tokenizer
        self.labels = tuple(labels)
        self.max_length = max_length
        self.temperature = temperature
        self.steps = steps
        from captum.attr import LayerIntegratedGradients  # imported when needed: it brings matplotlib

        self._ig = LayerIntegratedGradients(self._probs, embeddings())

    def _probs(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (self.net(ids, mask).float() / self.temperature).softmax(-1)

    def explain(self, texts: Sequence[str]) -> list[Explanation]:
        # Gradients, also where the caller runs under inference mode (Lightning's test loop does).
        with torch.inference_mode(False), torch.enable_grad():
            return [self._explain_one(text) for text in texts]

    def _explain_one(self, text: str) -> Explanation:
        encoded = self.tokenizer(text, truncation=True, max_length=self.max_length, return_tensors="pt")
        device = next(self.net.parameters()).device
        ids, mask = encoded["input_ids"].to(device), encoded["attention_mask"].to(device)
        word_ids = encoded.word_ids(0)
        # Positions of no word ([CLS], [SEP]) stay; every word's pieces, [UNK] included, become padding.
        special = torch.tensor([word is None for word in word_ids], dtype=torch.bool, device=device)
        baseline = torch.where(special, ids[0], self.tokenizer.pad_token_id).unsqueeze(0)
        with torch.no_grad():
            probs = self._probs(torch.cat([ids, baseline]), torch.cat([mask, mask]))
        target = int(probs[0].argmax())
        attributions, delta = self._ig.attribute(
            ids,
            baselines=baseline,
            target=target,
            additional_forward_args=(mask,),
            n_steps=self.steps,
            internal_batch_size=self.steps,
            return_convergence_delta=True,
        )
        by_piece = attributions[0].sum(-1).detach().float().cpu()
        scores: dict[int, float] = {}
        for position, word in enumerate(word_ids):
            if word is not None:
                scores[word] = scores.get(word, 0.0) + float(by_piece[position])
        words = []
        for word, score in scores.items():
            span = encoded.word_to_chars(0, word)
            words.append(WordScore(text[span.start : span.end], span.start, span.end, score))
        return Explanation(
            label=self.labels[target],
            prob=float(probs[0, target]),
            words=words,
            baseline_prob=float(probs[1, target]),
            delta=float(delta[0]),
        )
