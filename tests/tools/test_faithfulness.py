"""The faithfulness benchmark: the words each ranking deletes, and the probability falls it records."""

import json

import pytest

from emotion_lab.inference.predictor import EmotionPredictor
from emotion_lab.tools.faithfulness import delete_words, main


def test_deleting_words_removes_their_characters_and_collapses_the_spaces():
    text = "i feel so  happy today"
    assert delete_words(text, [(7, 9), (0, 1)]) == "feel happy today"
    assert delete_words(text, []) == "i feel so happy today"


def test_each_ranking_deletes_its_top_words_and_the_fall_is_recorded(tiny_model, data_dir, tmp_path):
    out = tmp_path / "faith"
    args = [str(tiny_model), "--data-dir", str(data_dir), "--n", "2", "--k", "1", "2", "--draws", "2"]
    assert main([*args, "--steps", "8", "--out", str(out)]) == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["meta"]["sentences"] == 2 and saved["meta"]["steps"] == 8
    methods = {f"{m} top-{k}" for m in ("attribution", "attention", "random") for k in (1, 2)}
    assert set(saved["results"]) == methods
    assert saved["explanation_cost"]["p50_ms"] > 0 and saved["explanation_cost"]["threads"] >= 1
    assert "| attribution top-1 |" in (out / "results.md").read_text()

    # By hand for the same two sentences: delete the highest-scored word(s), and the most-attended ones.
    predictor = EmotionPredictor.from_pretrained(tiny_model)
    texts = [line.rsplit(";", 1)[0] for line in (data_dir / "test.txt").read_text().splitlines()]
    texts = [t for t in texts if len(predictor.explain([t], steps=8)[0].words) >= 3][:2]
    expected = {"attribution": {1: [], 2: []}, "attention": {1: [], 2: []}}
    for text in texts:
        explanation = predictor.explain([text], steps=8)[0]
        attention = predictor.word_attention([text])[0]
        spans = [(w.start, w.end) for w in explanation.words]
        ranked = {
            "attribution": sorted(range(len(spans)), key=lambda i: -explanation.words[i].score),
            "attention": sorted(range(len(spans)), key=lambda i: -attention.weights[i]),
        }
        for method, order in ranked.items():
            for k in (1, 2):
                left = predictor(delete_words(text, [spans[i] for i in order[:k]])).probs[explanation.label]
                expected[method][k].append(explanation.prob - left)
    for method, by_k in expected.items():
        for k, falls in by_k.items():
            assert saved["results"][f"{method} top-{k}"]["mean_drop"] == pytest.approx(sum(falls) / 2, abs=1e-5)


def test_bad_numbers_are_refused_in_one_line(tiny_model, capsys):
    with pytest.raises(SystemExit) as stopped:
        main([str(tiny_model), "--n", "0"])
    assert stopped.value.code == 2
    assert "--n, --draws and every --k must be >= 1" in capsys.readouterr().err
