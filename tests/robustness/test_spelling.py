"""The spelling step: a misspelt word is read as the training word it most likely meant; anything a
dictionary knows, and anything that is not a plain word, stays as written."""

from __future__ import annotations

import random

import pytest

from emotion_lab.errors import ModelLoadError
from emotion_lab.robustness.perturb import PERTURBATIONS, seeded
from emotion_lab.robustness.spelling import HEADER, WordRecognizer, english_words, training_words

TRAINING = ["i feel scared and lonely tonight", "i feel so happy", "i am scared", "i feel sacred duty", "i feel lovely"]
TYPOS = ("typo_swap", "typo_drop", "typo_insert", "typo_keyboard")


@pytest.fixture(scope="module")
def recognizer():
    return WordRecognizer(training_words(TRAINING), known={"tonight"})


@pytest.mark.parametrize("name", TYPOS)
@pytest.mark.parametrize("seed", range(15))
def test_one_typo_of_each_kind_is_read_back(recognizer, name, seed):
    sentence = "i feel scared and lonely"
    # A typo that spells a real word ("feel" -> "fee") is no misspelling the step can see.
    changed = PERTURBATIONS[name](sentence, seeded(seed, name), known=english_words() | set(recognizer.counts))
    assert changed != sentence
    assert recognizer(changed) == sentence


def test_the_most_frequent_training_word_one_edit_away_wins(recognizer):
    assert recognizer.correct_word("sacred") == "sacred"  # known: never corrected
    assert recognizer.correct_word("scaerd") == "scared"
    assert WordRecognizer({"cared": 5, "scared": 1}).correct_word("sared") == "cared"
    assert recognizer.correct_word("xyzzyq") == "xyzzyq"  # nothing one edit away
    assert WordRecognizer({"at": 9, "the": 9})("ot teh") == "ot the"  # two letters: too short to tell


@pytest.mark.parametrize(
    "text",
    [
        "i met Scraed at the lake",  # a capital inside a sentence: a name
        "SCAERD",  # an acronym or shouting
        "@scaerd #scaerd https://scaerd.com scaerd2 scaerd's scaerd-ish",
        "the weather forecast mentions tonight",  # English words the training split never used
    ],
)
def test_names_links_and_real_words_stay_as_written(recognizer, text):
    assert recognizer(text) == text


def test_case_and_punctuation_around_a_word_are_kept(recognizer):
    assert recognizer("Lnoely. Scaerd, (hapyp)! i feel scaerd.") == "Lonely. Scared, (happy)! i feel scared."


def test_reading_twice_changes_nothing_more(recognizer):
    rng = random.Random(0)
    for i in range(200):
        text = PERTURBATIONS["typo"](rng.choice(TRAINING), seeded(i), known=recognizer.counts)
        text = PERTURBATIONS[rng.choice(["sentence_case", "punctuation", "mention"])](text, seeded(i))
        once = recognizer(text)
        assert recognizer(once) == once


def test_ties_are_broken_alike_in_training_and_in_a_saved_folder(tmp_path):
    # "stare" and "scare" are one edit from "sare" with equal counts: whichever order training met them in,
    # the step and the one a saved words.tsv rebuilds choose the same word.
    counts = {"stare": 2, "scare": 2}
    trained, reordered = WordRecognizer(counts), WordRecognizer(dict(reversed(counts.items())))
    loaded = WordRecognizer(WordRecognizer.read_counts(trained.save(tmp_path)))
    assert trained.correct_word("sare") == loaded.correct_word("sare") == reordered.correct_word("sare")


def test_a_very_long_training_word_is_left_out_of_the_dictionary():
    assert training_words(["ha" * 60 + " happy"]) == {"happy": 1}


def test_the_english_word_list_is_the_shipped_one():
    words = english_words()
    assert len(words) > 80_000 and {"the", "terrifying", "lovely"} <= words and "scaerd" not in words


def test_the_dictionary_round_trips(recognizer, tmp_path):
    path = recognizer.save(tmp_path)
    assert path.read_text().splitlines()[0] == HEADER
    assert WordRecognizer.read_counts(path) == recognizer.counts


@pytest.mark.parametrize(
    ("content", "where"),
    [
        ("words\tn\nsad\t3\n", ":1: the header must be"),
        (f"{HEADER}\nsad\t3\nSad\t2\n", ":3: expected a lower-case word, a tab and a count, got 'Sad\\\\t2'"),
        (f"{HEADER}\nsad 3\n", ":2: expected a lower-case word"),
        (f"{HEADER}\nsad\t-3\n", ":2: expected a lower-case word"),
        (f"{HEADER}\nsad\t\u00b2\n", ":2: expected a lower-case word"),  # a digit to str.isdigit, not to int()
        (f"{HEADER}\nsad\t{'9' * 5000}\n", ":2: expected a lower-case word"),
    ],
)
def test_a_bad_dictionary_line_is_named(tmp_path, content, where):
    path = tmp_path / "words.tsv"
    path.write_text(content)
    with pytest.raises(ModelLoadError, match=rf"words\.tsv{where}"):
        WordRecognizer.read_counts(path)


@pytest.mark.parametrize("counts", [["sad"], {"sad": "3"}, {"Sad": 3}, {"sad": -1}, {"sad": True}])
def test_a_checkpoints_dictionary_must_be_words_and_counts(counts):
    with pytest.raises(ModelLoadError, match="ckpt: the spelling dictionary is not lower-case words with counts"):
        WordRecognizer.checked_counts(counts, "ckpt")


def test_long_text_is_read_in_linear_time(recognizer):
    import time

    for text in ("." * 2500 + " a " + "Hello " * 400, "scaerd " * 800, "Scaerd. " * 600):
        started = time.perf_counter()
        recognizer(text)
        assert time.perf_counter() - started < 1.0, text[:20]
