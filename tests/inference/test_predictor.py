"""EmotionPredictor.word_attention: word-pieces summed into words, special tokens left out."""

import pytest
import torch

from emotion_lab.inference.predictor import EmotionPredictor


def test_word_attention_sums_word_pieces_and_leaves_out_special_tokens(tiny_model):
    predictor = EmotionPredictor.from_pretrained(tiny_model)
    text = "i feel unbelievably happy"
    encoded = predictor.tokenizer(text, return_tensors="pt")
    pieces = predictor.tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
    assert len(pieces) > len(text.split()) + 2  # "unbelievably" is several word-pieces: the case under test
    _, weights = predictor.backend(encoded["input_ids"], encoded["attention_mask"], with_attention=True)
    received = weights[0].mean(0)  # by key position, averaged over queries
    word_ids = encoded.word_ids(0)
    special = sum(float(received[i]) for i, w in enumerate(word_ids) if w is None)
    expected = [sum(float(received[i]) for i, w in enumerate(word_ids) if w == k) / (1 - special) for k in range(4)]

    (attention,) = predictor.word_attention([text])
    assert attention.words == ["i", "feel", "unbelievably", "happy"]
    assert attention.weights == pytest.approx(expected, abs=1e-6)
    assert sum(attention.weights) == pytest.approx(1.0)
    assert attention.special_share == pytest.approx(special, abs=1e-6)
    probs = predictor(text).probs
    assert attention.label == max(probs, key=probs.get) and attention.prob == pytest.approx(max(probs.values()))


def test_word_attention_needs_an_attention_layer(tiny_encoder):
    from emotion_lab.encoders.loading import load_tokenizer
    from emotion_lab.models.networks import BiLSTMAttentionNet

    torch.manual_seed(0)
    net = BiLSTMAttentionNet(tiny_encoder, lstm_hidden=8, attn_heads=0)
    with pytest.raises(ValueError, match="returns no attention"):
        EmotionPredictor(net, load_tokenizer(tiny_encoder)).word_attention(["i feel fine"])


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda folder, config: config.update(spelling="../../etc/words.tsv"), r"spelling='\.\./\.\./etc/words\.tsv'"),
        (lambda folder, config: (folder / "words.tsv").unlink(), "names a spelling dictionary, but words.tsv is missi"),
        (lambda folder, config: (folder / "words.tsv").write_text("word\tcount\nsad\t²\n"), r"words\.tsv:2: expected"),
    ],
)
def test_a_folder_whose_spelling_step_cannot_be_read_is_one_line(trained, tmp_path, change, problem):
    import json
    import shutil

    from emotion_lab.errors import ModelLoadError

    folder = shutil.copytree(trained["model"], tmp_path / "model")
    config = json.loads((folder / "emotion_lab.json").read_text())
    change(folder, config)
    (folder / "emotion_lab.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=problem):
        EmotionPredictor.from_pretrained(folder)
    assert EmotionPredictor.from_pretrained(folder, spelling=False).spelling is None  # the weights still load
