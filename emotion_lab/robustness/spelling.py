"""Word recognition before the tokenizer: a misspelt word is read as the training word it most likely meant.

A word-piece tokenizer cuts a typo into pieces the network rarely saw ("scaerd" -> "sca", "##er", "##d"),
and one such word flips about one label in ten. Correcting the word first (Pruthi et al., ACL 2019,
"Combating Adversarial Misspellings with Robust Word Recognition") removes most of that. The rule:

- a word is corrected only if no dictionary knows it: not a training word, not a whole word of the
  tokenizer's vocabulary, not a word of symspellpy's English frequency list (82,834 words), so real words
  the training data never used stay as written;
- it is read as the training word one edit away (a letter dropped, added, replaced or two swapped) that
  the training split uses most (symspellpy's lookup); with none, it stays as written;
- only lower-case words of `MIN_LETTERS` letters or more, or such a word capitalised at the start of a
  sentence, are corrected: capitalised words inside a sentence (names), acronyms, mentions, hashtags,
  links and words with digits or apostrophes are left alone. The corrected word keeps the case it was written in.

The dictionary is the training split's word counts, saved as `words.tsv` beside the model's weights
(`word<TAB>count` lines, read as data).
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from symspellpy import SymSpell, Verbosity

from emotion_lab.errors import ModelLoadError
from emotion_lab.robustness.perturb import vocabulary_words

DICTIONARY_FILE = "words.tsv"
HEADER = "word\tcount"
MIN_LETTERS = 3
MAX_EDITS = 1
SPELLING_KEY = "spelling_words"  # where a checkpoint's datamodule state keeps the dictionary
ENGLISH_WORDS = "frequency_dictionary_en_82_765.txt"  # shipped with symspellpy: "word count" lines

_TRAINING_WORD = re.compile(r"[a-z]+")
MAX_WORD_LETTERS = 100
_ENTRY_WORD = re.compile(rf"[a-z]{{1,{MAX_WORD_LETTERS}}}")
_COUNT = re.compile(r"[0-9]{1,18}")
_SPACE = re.compile(r"(\s+)")
_CLOSING = "\"')]"
# A whitespace-separated chunk that is one plain word: opening punctuation, ASCII letters, closing punctuation.
_WORD = re.compile(r"([(\"'\[]*)([A-Za-z]+)([.,!?;:)\"'\]]*)")
MAX_FILE_BYTES = 64 * 2**20  # a training split's words take well under 1 MiB


@functools.cache
def english_words() -> frozenset[str]:
    """The words of symspellpy's English frequency list: real words, never corrected."""
    text = importlib.resources.files("symspellpy").joinpath(ENGLISH_WORDS).read_text(encoding="utf-8")
    return frozenset(line.split(" ", 1)[0] for line in text.splitlines() if line)


def training_words(texts: Iterable[str]) -> Counter:
    """How often each lower-case word (of at most 100 letters) occurs in `texts` (the training split)."""
    return Counter(w for text in texts for w in _TRAINING_WORD.findall(text.lower()) if len(w) <= MAX_WORD_LETTERS)


class WordRecognizer:
    """`recognizer(text)`: the text with each unknown word read as its nearest frequent training word."""

    def __init__(self, counts: Mapping[str, int], known: Collection[str] = ()) -> None:
        """`counts`: training word -> count (what a word can be corrected to); `known`: more words that are
        never corrected (e.g. the tokenizer's whole words)."""
        self.counts = {word: int(count) for word, count in counts.items()}
        self._symspell = SymSpell(max_dictionary_edit_distance=MAX_EDITS)
        # symspellpy breaks ties of distance and count by insertion order: sorted, a run's own step and its
        # model folder's (words.tsv is sorted) choose alike.
        for word, count in sorted(self.counts.items()):
            self._symspell.create_dictionary_entry(word, count)
        self._known = frozenset(known)

    def knows(self, word: str) -> bool:
        return word in self.counts or word in self._known or word in english_words()

    @classmethod
    def for_tokenizer(cls, counts: Mapping[str, int], tokenizer) -> WordRecognizer:
        """The step of a model with this tokenizer: its whole words are never corrected."""
        return cls(counts, known=vocabulary_words(tokenizer))

    def correct_word(self, word: str) -> str:
        """The training word a lower-case `word` most likely meant, or `word` when it is known or has none."""
        if len(word) < MIN_LETTERS or self.knows(word):
            return word
        suggestions = self._symspell.lookup(word, Verbosity.TOP, max_edit_distance=MAX_EDITS)
        return suggestions[0].term if suggestions else word

    def __call__(self, text: str) -> str:
        parts = _SPACE.split(text)  # words and the whitespace between them, alternately
        sentence_start = True
        for i in range(0, len(parts), 2):
            chunk = parts[i]
            if match := _WORD.fullmatch(chunk):
                opening, word, closing = match.groups()
                if word.islower() or (sentence_start and word[0].isupper() and word[1:].islower()):
                    corrected = self.correct_word(word.lower())
                    if corrected != word.lower():
                        parts[i] = opening + (corrected if word.islower() else corrected.capitalize()) + closing
            if chunk:
                sentence_start = chunk.rstrip(_CLOSING).endswith((".", "!", "?"))
        return "".join(parts)

    def save(self, folder: Path) -> Path:
        path = Path(folder) / DICTIONARY_FILE
        lines = [HEADER, *(f"{word}\t{count}" for word, count in sorted(self.counts.items()))]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    @staticmethod
    def read_counts(path: Path) -> dict[str, int]:
        """The `word<TAB>count` lines of a dictionary file; a bad line stops with the file and line."""
        try:
            if Path(path).stat().st_size > MAX_FILE_BYTES:
                raise ModelLoadError(f"{path}: larger than {MAX_FILE_BYTES // 2**20} MiB; not a spelling dictionary")
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise ModelLoadError(f"{path}: cannot read the spelling dictionary ({type(err).__name__})") from None
        if not lines or lines[0] != HEADER:
            raise ModelLoadError(f"{path}:1: the header must be {HEADER!r}")
        counts = {}
        for number, line in enumerate(lines[1:], start=2):
            word, sep, count = line.partition("\t")
            if not sep or not _ENTRY_WORD.fullmatch(word) or not _COUNT.fullmatch(count):
                raise ModelLoadError(f"{path}:{number}: expected a lower-case word, a tab and a count, got {line!r}")
            counts[word] = int(count)
        return counts

    @staticmethod
    def checked_counts(counts: object, where: str) -> dict[str, int]:
        """`counts` from a checkpoint, if it is word -> count as training writes it; else a one-line error."""
        if not isinstance(counts, dict) or not all(
            isinstance(w, str) and _ENTRY_WORD.fullmatch(w) and type(c) is int and 0 <= c < 10**18
            for w, c in counts.items()
        ):
            raise ModelLoadError(f"{where}: the spelling dictionary is not lower-case words with counts")
        return counts
