"""Label-keeping perturbations of a sentence: the noise in text people actually write.

Each perturbation takes a sentence, a `random.Random` and optionally the words it must not spell
(`known`, e.g. a tokenizer's whole words), and returns the changed sentence, or the sentence itself
where it does not apply (no word long enough for a typo, no contraction, no first name). Each is built
to leave what the sentence says alone: a typo lands on one word of four letters or more and is not made
where it would spell a known word ("scared" never becomes "sacred" when "sacred" is known); the added
mention, link, hashtag and emoji carry no emotion; a contraction keeps its meaning; capitals are kept.

The behaviour suite applies each one to every test sentence; `data.noise` applies them to training
sentences on the fly. Both draw from a generator seeded by a string (see `seeded`), so a sentence gets
the same change in every process and run.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Collection

from emotion_lab.errors import ConfigError

Perturbation = Callable[..., str]  # (text, rng, known=()) -> text
Known = Collection[str]  # lower-case words a typo must not spell

WORD = re.compile(r"[^\W\d_]+")  # a run of letters, any script
TYPO_MIN_LETTERS = 4

# QWERTY neighbours of each letter: the key a finger lands on instead.
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
KEYBOARD_NEIGHBOURS: dict[str, str] = {}
for _r, _row in enumerate(_ROWS):
    for _c, _key in enumerate(_row):
        near = [_row[_c + d] for d in (-1, 1) if 0 <= _c + d < len(_row)]
        for _other in (_r - 1, _r + 1):
            if 0 <= _other < len(_ROWS):
                near += [_ROWS[_other][c] for c in (_c - 1, _c, _c + 1) if 0 <= c < len(_ROWS[_other])]
        KEYBOARD_NEIGHBOURS[_key] = "".join(near)

HANDLES = ("@jess_92", "@mike", "@sam_writes", "@the_real_alex", "@nina.k", "@daily_dan")
HASHTAGS = ("#monday", "#life", "#thoughts", "#today", "#random", "#update")
# Emoji that carry no emotion of their own: a smile or a skull would change the label.
EMOJI = ("📷", "📌", "🎧", "☕", "🚗", "📚")
URL_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

# Each group holds one contraction's spellings: in full, with an apostrophe, and as typed without one.
CONTRACTIONS: tuple[tuple[str, ...], ...] = (
    ("i am", "i'm", "im"),
    ("do not", "don't", "dont"),
    ("does not", "doesn't", "doesnt"),
    ("did not", "didn't", "didnt"),
    ("cannot", "can't", "cant"),
    ("is not", "isn't", "isnt"),
    ("was not", "wasn't", "wasnt"),
    ("have not", "haven't", "havent"),
    ("i have", "i've", "ive"),
    ("it is", "it's"),  # "its" is also the possessive
)
_SPELLING_GROUP = {spelling: group for group in CONTRACTIONS for spelling in group}
# ASCII case folding only: Unicode folding would match spellings the table does not hold ("doeſn't").
_CONTRACTION = re.compile(
    r"\b(" + "|".join(sorted((re.escape(s) for s in _SPELLING_GROUP), key=len, reverse=True)) + r")\b",
    re.IGNORECASE | re.ASCII,
)

FIRST_NAMES = (
    "james", "mary", "john", "sarah", "david", "emma", "michael", "olivia", "daniel", "sophia", "ahmed",
    "fatima", "wei", "mei", "carlos", "maria", "raj", "priya", "kwame", "amara", "ivan", "anna", "kenji",
    "yuki", "liam", "chloe", "omar", "leila", "lucas", "zoe",
)  # fmt: skip
_NAME = re.compile(r"\b(" + "|".join(FIRST_NAMES) + r")\b", re.IGNORECASE | re.ASCII)


def vocabulary_words(tokenizer) -> frozenset[str]:
    """The whole words (letters only) of a tokenizer's vocabulary, lower case: what a typo must not spell."""
    return frozenset(token.lower() for token in tokenizer.get_vocab() if token.isalpha())


def seeded(*parts: object) -> random.Random:
    """A generator seeded by its parts (e.g. seed, perturbation, sentence index): the same draws in any
    process, whatever order the sentences come in."""
    return random.Random("/".join(map(str, parts)))


def _same_case(word: str, like: str) -> str:
    """`word` in the case of `like`: all capitals, a capital first letter, or as it is."""
    if like.isupper() and len(like) > 1:
        return word.upper()
    return word[:1].upper() + word[1:] if like[:1].isupper() else word


def _typo(text: str, rng: random.Random, edits: Callable[[str], list[str]], known: Known) -> str:
    """One of `edits(word)` for one word of TYPO_MIN_LETTERS letters or more, both drawn at random among
    those that make a word that is not `known`."""
    words = [m for m in WORD.finditer(text) if len(m.group()) >= TYPO_MIN_LETTERS]
    rng.shuffle(words)
    for match in words:
        word = match.group()
        candidates = sorted({c for c in edits(word) if c != word and c.lower() not in known})
        if candidates:
            return text[: match.start()] + rng.choice(candidates) + text[match.end() :]
    return text


def _swaps(word: str) -> list[str]:
    return [word[:i] + word[i + 1] + word[i] + word[i + 2 :] for i in range(len(word) - 1)]


def _drops(word: str) -> list[str]:
    return [word[:i] + word[i + 1 :] for i in range(1, len(word))]  # the first letter stays: people rarely miss it


def _inserts(word: str) -> list[str]:
    return [
        word[:i] + (extra.upper() if word[i].isupper() else extra) + word[i:]
        for i in range(1, len(word))
        for extra in KEYBOARD_NEIGHBOURS.get(word[i].lower(), "")
    ]


def _neighbours(word: str) -> list[str]:
    return [
        word[:i] + (new.upper() if ch.isupper() else new) + word[i + 1 :]
        for i, ch in enumerate(word)
        for new in KEYBOARD_NEIGHBOURS.get(ch.lower(), "")
    ]


def typo_swap(text: str, rng: random.Random, known: Known = ()) -> str:
    """Two adjacent, different letters swapped in one word of 4+ letters ("feel" -> "fele")."""
    return _typo(text, rng, _swaps, known)


def typo_drop(text: str, rng: random.Random, known: Known = ()) -> str:
    """One letter, not the first, dropped from a word of 4+ letters ("happy" -> "hapy")."""
    return _typo(text, rng, _drops, known)


def typo_insert(text: str, rng: random.Random, known: Known = ()) -> str:
    """A keyboard neighbour of a letter typed before it in a word of 4+ letters ("angry" -> "angrty")."""
    return _typo(text, rng, _inserts, known)


def typo_keyboard(text: str, rng: random.Random, known: Known = ()) -> str:
    """One letter of a word of 4+ letters replaced by its keyboard neighbour ("scared" -> "sxared")."""
    return _typo(text, rng, _neighbours, known)


TYPOS: dict[str, Perturbation] = {
    "typo_swap": typo_swap,
    "typo_drop": typo_drop,
    "typo_insert": typo_insert,
    "typo_keyboard": typo_keyboard,
}


def typo(text: str, rng: random.Random, known: Known = ()) -> str:
    """One typo of a kind drawn at random (swap, drop, insert, keyboard neighbour)."""
    return TYPOS[rng.choice(sorted(TYPOS))](text, rng, known)


def sentence_case(text: str, rng: random.Random, known: Known = ()) -> str:
    """First letter and the pronoun "i" capitalised, a final period where no end mark is."""
    out = re.sub(r"\bi\b", "I", text)
    out = out[:1].upper() + out[1:]
    return out if re.search(r"[.!?…]\s*$", out) else out.rstrip() + "."


def upper_case(text: str, rng: random.Random, known: Known = ()) -> str:
    """Every letter upper case, as shouted."""
    return text.upper()


def punctuation(text: str, rng: random.Random, known: Known = ()) -> str:
    """A final "!", "!!", "..." or "." after the last word."""
    return text.rstrip() + rng.choice(("!", "!!", "...", "."))


def mention(text: str, rng: random.Random, known: Known = ()) -> str:
    """An @handle in front, as in a reply ("@jess_92 i feel ...")."""
    return f"{rng.choice(HANDLES)} {text}"


def url(text: str, rng: random.Random, known: Known = ()) -> str:
    """A short link after the sentence ("... https://t.co/x7Yb2")."""
    return f"{text} https://t.co/{''.join(rng.choice(URL_CHARS) for _ in range(rng.randint(5, 10)))}"


def hashtag(text: str, rng: random.Random, known: Known = ()) -> str:
    """A neutral hashtag after the sentence ("... #monday")."""
    return f"{text} {rng.choice(HASHTAGS)}"


def emoji(text: str, rng: random.Random, known: Known = ()) -> str:
    """An emoji without an emotion of its own after the sentence ("... 📷")."""
    return f"{text} {rng.choice(EMOJI)}"


def contraction(text: str, rng: random.Random, known: Known = ()) -> str:
    """Each contraction written another of its ways: "i am" / "i'm" / "im", "do not" / "don't" / "dont"."""

    def respell(match: re.Match) -> str:
        found = match.group()
        other = rng.choice([s for s in _SPELLING_GROUP[found.lower()] if s != found.lower()])
        return _same_case(other, found)

    return _CONTRACTION.sub(respell, text)


def first_name(text: str, rng: random.Random, known: Known = ()) -> str:
    """Each first name from FIRST_NAMES replaced by another one, its case kept."""

    def rename(match: re.Match) -> str:
        found = match.group()
        other = rng.choice([n for n in FIRST_NAMES if n != found.lower()])
        return _same_case(other, found)

    return _NAME.sub(rename, text)


# Name -> perturbation, as the behaviour suite reports them and `data.noise.kinds` lists them.
PERTURBATIONS: dict[str, Perturbation] = {
    "typo": typo,
    **TYPOS,
    "sentence_case": sentence_case,
    "upper_case": upper_case,
    "punctuation": punctuation,
    "mention": mention,
    "url": url,
    "hashtag": hashtag,
    "emoji": emoji,
    "contraction": contraction,
    "first_name": first_name,
}


def perturbation(name: str) -> Perturbation:
    """The perturbation called `name`, or one line naming the allowed ones."""
    try:
        return PERTURBATIONS[name]
    except KeyError:
        raise ConfigError(f"unknown perturbation {name!r} (allowed: {', '.join(PERTURBATIONS)})") from None
