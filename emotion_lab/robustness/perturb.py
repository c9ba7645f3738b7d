"""Label-keeping perturbations of a sentence: the noise in text people actually write.

Each perturbation takes a sentence and a `random.Random` and returns the changed sentence, or the
sentence itself where it does not apply (no word long enough for a typo, no contraction, no first
name). None of them touches what the sentence says: a typo lands on one word of four letters or more,
the added mention, link, hashtag and emoji are neutral, a contraction keeps its meaning.

The behaviour suite applies each one to every test sentence; `data.noise` applies them to training
sentences on the fly. Both draw from a generator seeded by a string (see `seeded`), so a sentence gets
the same change in every process and run.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from emotion_lab.errors import ConfigError

Perturbation = Callable[[str, random.Random], str]

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
    ("it is", "it's", "its"),
)
_SPELLING_GROUP = {spelling: group for group in CONTRACTIONS for spelling in group}
_CONTRACTION = re.compile(
    r"\b(" + "|".join(sorted((re.escape(s) for s in _SPELLING_GROUP), key=len, reverse=True)) + r")\b",
    re.IGNORECASE,
)

FIRST_NAMES = (
    "james", "mary", "john", "sarah", "david", "emma", "michael", "olivia", "daniel", "sophia", "ahmed",
    "fatima", "wei", "mei", "carlos", "maria", "raj", "priya", "kwame", "amara", "ivan", "anna", "kenji",
    "yuki", "liam", "chloe", "omar", "leila", "lucas", "zoe",
)  # fmt: skip
_NAME = re.compile(r"\b(" + "|".join(FIRST_NAMES) + r")\b", re.IGNORECASE)


def seeded(*parts: object) -> random.Random:
    """A generator seeded by its parts (e.g. seed, perturbation, sentence index): the same draws in any
    process, whatever order the sentences come in."""
    return random.Random("/".join(map(str, parts)))


def _typo(text: str, rng: random.Random, edit: Callable[[str, random.Random], str | None]) -> str:
    """`edit` applied to one word of TYPO_MIN_LETTERS letters or more, drawn at random among those it changes."""
    words = [m for m in WORD.finditer(text) if len(m.group()) >= TYPO_MIN_LETTERS]
    rng.shuffle(words)
    for match in words:
        changed = edit(match.group(), rng)
        if changed is not None and changed != match.group():
            return text[: match.start()] + changed + text[match.end() :]
    return text


def _swap(word: str, rng: random.Random) -> str | None:
    spots = [i for i in range(len(word) - 1) if word[i] != word[i + 1]]
    if not spots:
        return None
    i = rng.choice(spots)
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def _drop(word: str, rng: random.Random) -> str | None:
    i = rng.randrange(1, len(word))  # the first letter stays: people rarely miss it
    return word[:i] + word[i + 1 :]


def _insert(word: str, rng: random.Random) -> str | None:
    i = rng.randrange(1, len(word))
    near = KEYBOARD_NEIGHBOURS.get(word[i].lower())
    extra = rng.choice(near) if near else word[i]
    return word[:i] + extra + word[i:]


def _neighbour(word: str, rng: random.Random) -> str | None:
    spots = [i for i, ch in enumerate(word) if ch.lower() in KEYBOARD_NEIGHBOURS]
    if not spots:
        return None
    i = rng.choice(spots)
    new = rng.choice(KEYBOARD_NEIGHBOURS[word[i].lower()])
    return word[:i] + (new.upper() if word[i].isupper() else new) + word[i + 1 :]


def typo_swap(text: str, rng: random.Random) -> str:
    """Two adjacent, different letters swapped in one word of 4+ letters ("feel" -> "fele")."""
    return _typo(text, rng, _swap)


def typo_drop(text: str, rng: random.Random) -> str:
    """One letter, not the first, dropped from a word of 4+ letters ("happy" -> "hapy")."""
    return _typo(text, rng, _drop)


def typo_insert(text: str, rng: random.Random) -> str:
    """A keyboard neighbour of a letter typed before it in a word of 4+ letters ("angry" -> "angrty")."""
    return _typo(text, rng, _insert)


def typo_keyboard(text: str, rng: random.Random) -> str:
    """One letter of a word of 4+ letters replaced by its keyboard neighbour ("scared" -> "sxared")."""
    return _typo(text, rng, _neighbour)


TYPOS: dict[str, Perturbation] = {
    "typo_swap": typo_swap,
    "typo_drop": typo_drop,
    "typo_insert": typo_insert,
    "typo_keyboard": typo_keyboard,
}


def typo(text: str, rng: random.Random) -> str:
    """One typo of a kind drawn at random (swap, drop, insert, keyboard neighbour)."""
    return TYPOS[rng.choice(sorted(TYPOS))](text, rng)


def sentence_case(text: str, rng: random.Random) -> str:
    """First letter and the pronoun "i" capitalised, a final period where no end mark is."""
    out = re.sub(r"\bi\b", "I", text)
    out = out[:1].upper() + out[1:]
    return out if re.search(r"[.!?…]\s*$", out) else out.rstrip() + "."


def upper_case(text: str, rng: random.Random) -> str:
    """Every letter upper case, as shouted."""
    return text.upper()


def punctuation(text: str, rng: random.Random) -> str:
    """A final "!", "!!", "..." or "." after the last word."""
    return text.rstrip() + rng.choice(("!", "!!", "...", "."))


def mention(text: str, rng: random.Random) -> str:
    """An @handle in front, as in a reply ("@jess_92 i feel ...")."""
    return f"{rng.choice(HANDLES)} {text}"


def url(text: str, rng: random.Random) -> str:
    """A short link after the sentence ("... https://t.co/x7Yb2")."""
    return f"{text} https://t.co/{''.join(rng.choice(URL_CHARS) for _ in range(rng.randint(5, 10)))}"


def hashtag(text: str, rng: random.Random) -> str:
    """A neutral hashtag after the sentence ("... #monday")."""
    return f"{text} {rng.choice(HASHTAGS)}"


def emoji(text: str, rng: random.Random) -> str:
    """An emoji without an emotion of its own after the sentence ("... 📷")."""
    return f"{text} {rng.choice(EMOJI)}"


def contraction(text: str, rng: random.Random) -> str:
    """Each contraction written another of its ways: "i am" / "i'm" / "im", "do not" / "don't" / "dont"."""

    def respell(match: re.Match) -> str:
        found = match.group()
        other = rng.choice([s for s in _SPELLING_GROUP[found.lower()] if s != found.lower()])
        return other[:1].upper() + other[1:] if found[:1].isupper() else other

    return _CONTRACTION.sub(respell, text)


def first_name(text: str, rng: random.Random) -> str:
    """Each first name from FIRST_NAMES replaced by another one, its case kept."""

    def rename(match: re.Match) -> str:
        found = match.group()
        other = rng.choice([n for n in FIRST_NAMES if n != found.lower()])
        return other.capitalize() if found[:1].isupper() else other

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
