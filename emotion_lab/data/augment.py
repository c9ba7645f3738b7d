"""WordNet synonym replacement for the training split, built to keep each sentence's emotion.

How a word is replaced, and why:
- Only the word's own dominant sense is used: among the WordNet synsets that list the word itself
  as a lemma, the one whose lemma for this word is most often tagged in the SemCor counts (ties:
  WordNet's order). Its other lemmas are the candidates. A synset is one meaning, so substituting
  inside it keeps the meaning, and with it the emotion ("furious" -> "fierce", never a lemma from
  another sense); mixing senses is how emotion drifts ("happy" -> "felicitous", apt, not joyful).
  Requiring the surface form to be a lemma also rules out inflection errors ("loved" is not
  turned into "love"). No part-of-speech tagger is needed (NLTK's needs a download): the part of
  speech is that of the chosen synset, so the synonym always has the word's part of speech.
- Emotion-bearing words are *not* protected: same-synset synonyms of them ("enraged" for
  "angered") are exactly the paraphrases the classifier should learn to read.
- Never touched: stop words, negations and intensifiers ("not", "never", "no", "didnt", "very",
  "so", "really", ...): replacing them can flip or blur the emotion; plus any `protected_words`.
- Multi-word lemmas become spaced words (`feel_good` -> "feel good"); output stays lower-case.
  Lemmas with digits or punctuation ("24-hour_interval") are skipped.

Sentences with no eligible word, words with no synonym, empty or non-ASCII text come back
unchanged. Each copy is seeded from (seed, sentence index, copy number), so the augmented set is
the same for the same seed whatever the order or process it is built in.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterable

from datasets import Dataset, concatenate_datasets
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from emotion_lab.data.wordnet import load_wordnet
from emotion_lab.errors import ConfigError

log = logging.getLogger(__name__)

NEGATIONS = frozenset(
    "no not nor never none nobody nothing nowhere neither without cannot cant dont doesnt didnt isnt "
    "arent wasnt werent wont wouldnt shouldnt couldnt hasnt havent hadnt aint nt n't".split()
)
INTENSIFIERS = frozenset(
    "very so too really quite rather pretty extremely incredibly totally absolutely completely utterly "
    "highly deeply truly super especially particularly fairly somewhat slightly barely hardly scarcely "
    "just even still much more most less least enough almost".split()
)
# The data is apostrophe-less lower case ("im", "ive", "id"): these are pronoun + verb, not words.
CONTRACTIONS = frozenset("im ive id ill youre youve theyre thats whats theres lets".split())
DEFAULT_PROTECTED = frozenset(ENGLISH_STOP_WORDS) | NEGATIONS | INTENSIFIERS | CONTRACTIONS
_PLAIN_WORD = re.compile(r"^[a-z]+$")
_PLAIN_LEMMA = re.compile(r"^[a-z]+(?:_[a-z]+)*$")


class SynonymAugmenter:
    """Adds `copies` synonym-replaced copies of each training sentence.

    Replace either up to `n` eligible words per copy, or (if `p` is set) each eligible word with
    probability `p`. A copy identical to its original is dropped rather than duplicated.
    """

    def __init__(
        self,
        enabled: bool = True,
        copies: int = 1,
        n: int = 2,
        p: float | None = None,
        seed: int = 0,
        protected_words: Iterable[str] = (),
    ) -> None:
        if copies < 0:
            raise ConfigError(f"data.augment.copies={copies}: must be >= 0 (0 = off)")
        if p is None and n < 1:
            raise ConfigError(f"data.augment.n={n}: must be >= 1 (or set data.augment.p)")
        if p is not None and not 0.0 < p <= 1.0:
            raise ConfigError(f"data.augment.p={p}: must be in (0, 1]")
        self.enabled = enabled and copies > 0
        self.copies, self.n, self.p, self.seed = copies, n, p, seed
        self.protected = DEFAULT_PROTECTED | {w.lower() for w in protected_words}
        self._wordnet = None
        self._synonyms: dict[str, tuple[str, ...]] = {}

    def check_ready(self) -> None:
        """Load WordNet now (raises WordNetMissingError with instructions if there is none)."""
        if self.enabled and self._wordnet is None:
            self._wordnet = load_wordnet()

    def synonyms(self, word: str) -> tuple[str, ...]:
        """Same-synset synonyms of `word` in its dominant sense, as spaced lower-case words."""
        if word not in self._synonyms:
            self._synonyms[word] = self._lookup(word)
        return self._synonyms[word]

    def _lookup(self, word: str) -> tuple[str, ...]:
        if word in self.protected or not _PLAIN_WORD.match(word):
            return ()
        self.check_ready()
        senses = [s for s in self._wordnet.synsets(word) if word in s.lemma_names()]
        if not senses:
            return ()
        # max() keeps the first of equal counts: WordNet lists a word's senses most frequent first.
        sense = max(senses, key=lambda s: next(lemma.count() for lemma in s.lemmas() if lemma.name() == word))
        return tuple(
            lemma.replace("_", " ") for lemma in sense.lemma_names() if lemma != word and _PLAIN_LEMMA.match(lemma)
        )

    def augment_text(self, text: str, rng: random.Random) -> tuple[str, int]:
        """One augmented copy of `text` and how many words it replaced."""
        if not text or not text.isascii():
            return text, 0
        words = text.split(" ")
        eligible = [i for i, w in enumerate(words) if self.synonyms(w)]
        if self.p is not None:
            chosen = [i for i in eligible if rng.random() < self.p]
        else:
            chosen = rng.sample(eligible, min(self.n, len(eligible)))
        for i in chosen:
            words[i] = rng.choice(self.synonyms(words[i]))
        return " ".join(words), len(chosen)

    def augment_dataset(self, train: Dataset) -> Dataset:
        """The training split plus its augmented copies (originals first, then copies)."""
        if not self.enabled:
            return train
        self.check_ready()
        texts, labels = train["text"], train["label"]
        new_texts, new_labels, replaced, unchanged = [], [], 0, 0
        for copy in range(self.copies):
            for index, (text, label) in enumerate(zip(texts, labels)):
                rng = random.Random(f"{self.seed}:{index}:{copy}")
                augmented, count = self.augment_text(text, rng)
                if count == 0 or augmented == text:
                    unchanged += 1
                    continue
                new_texts.append(augmented)
                new_labels.append(int(label))
                replaced += count
        log.info(
            "augmentation: %d new sentences from %d originals x %d copies, %d words replaced, "
            "%d copies dropped as unchanged (no eligible word)",
            len(new_texts),
            len(texts),
            self.copies,
            replaced,
            unchanged,
        )
        self.stats = {"added": len(new_texts), "words_replaced": replaced, "unchanged": unchanged}
        if not new_texts:
            return train
        extra = Dataset.from_dict({"text": new_texts, "label": new_labels}, features=train.features)
        return concatenate_datasets([train.select_columns(["text", "label"]), extra])
