"""Each perturbation changes a sentence the way its docstring says, and only where it applies."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emotion_lab.errors import ConfigError
from emotion_lab.robustness import perturb
from emotion_lab.robustness.perturb import KEYBOARD_NEIGHBOURS, PERTURBATIONS, seeded

words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=9)
sentences = st.lists(words, min_size=1, max_size=8).map(" ".join)
seeds = st.integers(0, 10**6)


def changed_word(before: str, after: str) -> tuple[str, str]:
    """The one word that differs between two sentences of the same word count."""
    a, b = before.split(" "), after.split(" ")
    assert len(a) == len(b)
    diffs = [(x, y) for x, y in zip(a, b) if x != y]
    assert len(diffs) == 1, (before, after)
    return diffs[0]


def eligible(sentence: str) -> bool:
    return any(len(w) >= perturb.TYPO_MIN_LETTERS for w in sentence.split())


@settings(max_examples=200, deadline=None)
@given(sentences, seeds)
def test_swap_transposes_two_adjacent_letters_of_one_long_word(sentence, seed):
    out = perturb.typo_swap(sentence, seeded(seed))
    if not any(len(w) >= 4 and len(set(w)) > 1 for w in sentence.split()):
        assert out == sentence
        return
    old, new = changed_word(sentence, out)
    assert len(old) >= 4 and sorted(old) == sorted(new)
    i = next(k for k in range(len(old)) if old[k] != new[k])
    assert new == old[:i] + old[i + 1] + old[i] + old[i + 2 :]


@settings(max_examples=200, deadline=None)
@given(sentences, seeds)
def test_drop_removes_one_letter_but_the_first(sentence, seed):
    out = perturb.typo_drop(sentence, seeded(seed))
    if not eligible(sentence):
        assert out == sentence
        return
    old, new = changed_word(sentence, out)
    assert len(old) >= 4 and len(new) == len(old) - 1 and new[0] == old[0]
    assert any(old[:i] + old[i + 1 :] == new for i in range(1, len(old)))


@settings(max_examples=200, deadline=None)
@given(sentences, seeds)
def test_insert_adds_a_keyboard_neighbour_of_the_next_letter(sentence, seed):
    out = perturb.typo_insert(sentence, seeded(seed))
    if not eligible(sentence):
        assert out == sentence
        return
    old, new = changed_word(sentence, out)
    assert len(new) == len(old) + 1 and new[0] == old[0]
    assert any(new[:i] + new[i + 1 :] == old and new[i] in KEYBOARD_NEIGHBOURS[new[i + 1]] for i in range(1, len(old)))


@settings(max_examples=200, deadline=None)
@given(sentences, seeds)
def test_keyboard_replaces_one_letter_by_its_neighbour(sentence, seed):
    out = perturb.typo_keyboard(sentence, seeded(seed))
    if not eligible(sentence):
        assert out == sentence
        return
    old, new = changed_word(sentence, out)
    diff = [i for i in range(len(old)) if old[i] != new[i]]
    assert len(old) == len(new) >= 4 and len(diff) == 1
    assert new[diff[0]] in KEYBOARD_NEIGHBOURS[old[diff[0]]]


def test_neighbours_are_symmetric_and_near():
    assert "w" in KEYBOARD_NEIGHBOURS["e"] and "d" in KEYBOARD_NEIGHBOURS["e"] and "p" not in KEYBOARD_NEIGHBOURS["e"]
    assert all(k in KEYBOARD_NEIGHBOURS[n] for k, near in KEYBOARD_NEIGHBOURS.items() for n in near)


@settings(max_examples=100, deadline=None)
@given(sentences, seeds)
def test_additions_keep_the_sentence_whole(sentence, seed):
    assert perturb.mention(sentence, seeded(seed)).split(" ", 1)[1] == sentence
    assert perturb.mention(sentence, seeded(seed)).split(" ", 1)[0] in perturb.HANDLES
    link = perturb.url(sentence, seeded(seed))
    assert link.startswith(sentence + " ") and re.fullmatch(
        r"https://t\.co/[A-Za-z0-9]{5,10}", link[len(sentence) + 1 :]
    )
    assert perturb.hashtag(sentence, seeded(seed))[len(sentence) + 1 :] in perturb.HASHTAGS
    assert perturb.emoji(sentence, seeded(seed))[len(sentence) + 1 :] in perturb.EMOJI
    mark = perturb.punctuation(sentence, seeded(seed))
    assert mark.startswith(sentence) and mark[len(sentence) :] in ("!", "!!", "...", ".")


def test_case():
    assert perturb.sentence_case("i think i feel happy", seeded(0)) == "I think I feel happy."
    assert perturb.sentence_case("is it ok?", seeded(0)) == "Is it ok?"
    assert perturb.sentence_case("this is fine", seeded(0)) == "This is fine."  # "this" keeps its i
    assert perturb.upper_case("i feel sad", seeded(0)) == "I FEEL SAD"


def full_form(text: str) -> str:
    for group in perturb.CONTRACTIONS:
        for spelling in group[1:]:
            text = re.sub(rf"\b{re.escape(spelling)}\b", group[0], text, flags=re.IGNORECASE)
    return text.lower()


@pytest.mark.parametrize(
    "sentence", ["i am so tired", "im not sure i didnt mean it", "I'm scared and i can't sleep", "it's fine"]
)
def test_contraction_respells_each_without_changing_what_is_said(sentence):
    for seed in range(20):
        out = perturb.contraction(sentence, seeded(seed))
        assert out != sentence and full_form(out) == full_form(sentence)
        assert out[0].isupper() == sentence[0].isupper()
    assert perturb.contraction("nothing to respell here", seeded(0)) == "nothing to respell here"


def test_first_name_swaps_names_only():
    out = perturb.first_name("Sarah told james i was wrong", seeded(3))
    new_first, rest = out.split(" ", 1)
    assert new_first != "Sarah" and new_first.lower() in perturb.FIRST_NAMES and new_first[0].isupper()
    told, name, tail = rest.split(" ", 2)
    assert told == "told" and name != "james" and name in perturb.FIRST_NAMES and tail == "i was wrong"
    assert perturb.first_name("i feel jamesy today", seeded(0)) == "i feel jamesy today"


@pytest.mark.parametrize("name", sorted(PERTURBATIONS))
def test_same_seed_same_change_and_seeds_differ(name):
    text = "i am feeling really sad about james and the whole thing today"
    assert PERTURBATIONS[name](text, seeded(7, name, 3)) == PERTURBATIONS[name](text, seeded(7, name, 3))
    if name not in ("sentence_case", "upper_case"):  # those have one way to apply
        outs = {PERTURBATIONS[name](text, seeded(s, name, 3)) for s in range(10)}
        assert len(outs) > 1


def test_seeded_draws_do_not_depend_on_the_process_hash_seed():
    code = "from emotion_lab.robustness.perturb import seeded; print(seeded(1, 'typo', 5).random())"
    runs = {
        subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": str(h)}, capture_output=True, text=True
        ).stdout
        for h in (1, 2)
    }
    assert runs == {f"{seeded(1, 'typo', 5).random()}\n"}


def test_unknown_perturbation_is_one_line_naming_the_allowed():
    with pytest.raises(ConfigError, match=r"unknown perturbation 'typos' \(allowed: typo, typo_swap"):
        perturb.perturbation("typos")


mixed = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'éſİ", min_size=1, max_size=9),
    min_size=1,
    max_size=8,
).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(mixed, seeds, st.sampled_from(sorted(PERTURBATIONS)))
def test_any_case_or_letter_is_handled_without_error(sentence, seed, name):
    assert isinstance(PERTURBATIONS[name](sentence, seeded(seed)), str)


def test_capitals_are_kept():
    assert perturb.contraction("I AM SO DONE", seeded(0)) in ("I'M SO DONE", "IM SO DONE")
    assert perturb.first_name("JAMES left", seeded(0)).split()[0].isupper()
    for seed in range(20):
        out = perturb.typo_insert("ANGRY", seeded(seed))
        assert out.isupper() and len(out) == 6


def test_the_possessive_its_is_no_contraction():
    assert perturb.contraction("the dog wagged its tail", seeded(0)) == "the dog wagged its tail"
    assert perturb.contraction("it is late", seeded(0)) == "it's late"


@pytest.mark.parametrize("name", sorted(perturb.TYPOS))
def test_a_typo_never_spells_a_known_word(name):
    known = {"sacred", "live", "lobe", "hat", "hare", "clam", "gad", "scare", "sared", "scred"}
    for word in ("scared", "love", "hate", "calm", "glad"):
        for seed in range(40):
            out = perturb.TYPOS[name](word, seeded(seed), known)
            assert out.lower() not in known and out != word


def test_vocabulary_words_are_the_whole_words(tiny_encoder):
    from emotion_lab.encoders.loading import load_tokenizer

    words = perturb.vocabulary_words(load_tokenizer(tiny_encoder))
    assert {"sacred", "live", "happy"} <= words and not any(w.startswith("#") or not w.isalpha() for w in words)
