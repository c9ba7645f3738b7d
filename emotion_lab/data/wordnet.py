"""WordNet 3.0 for NLTK, offline.

NLTK reads WordNet from its data path (`nltk.download("wordnet")` puts it there, and needs a
network). Offline, Debian's `wordnet-base` and `wordnet-sense-index` packages hold the same
WordNet 3.0 in /usr/share/wordnet, but NLTK will not read that folder in place: its path guard
refuses folders outside the data path (a symlink resolves outside too), and its reader needs a
`lexnames` file that Debian does not ship. So a one-time preparation copies the dictionary files
into an NLTK data folder this project controls (`~/.cache/emotion_lab/nltk_data`, or
`$EMOTION_LAB_NLTK_DATA`), writes `lexnames` (the table of lexicographer files documented in
lexnames(5WN)), and adds that folder to `nltk.data.path`.

    python -m emotion_lab.data.wordnet     # prepare now and print where (also done on first use)
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import nltk

from emotion_lab.errors import UserInputError

log = logging.getLogger(__name__)

DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")
NLTK_DATA_ENV = "EMOTION_LAB_NLTK_DATA"
WORDNET_FILES = (
    "cntlist.rev",
    "index.sense",
    "index.adj",
    "index.adv",
    "index.noun",
    "index.verb",
    "data.adj",
    "data.adv",
    "data.noun",
    "data.verb",
    "adj.exc",
    "adv.exc",
    "noun.exc",
    "verb.exc",
)
# WordNet 3.0's lexicographer files in file-number order (lexnames(5WN)); the syntactic category
# column follows from the prefix.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
LEX_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


class WordNetMissingError(UserInputError, RuntimeError):
    """No WordNet that NLTK can read was found."""


def nltk_data_dir() -> Path:
    return Path(os.environ.get(NLTK_DATA_ENV, Path.home() / ".cache" / "emotion_lab" / "nltk_data"))


def prepare_from_debian(source: Path = DEBIAN_WORDNET_DIR, data_dir: Path | None = None) -> Path:
    """Copy Debian's WordNet into an NLTK data folder, add `lexnames`; returns the corpus folder.

    The folder is built beside its final place and renamed into it, so an interrupted copy is
    never mistaken for a complete one.
    """
    missing = [name for name in WORDNET_FILES if not (source / name).is_file()]
    if missing:
        raise WordNetMissingError(_missing_message(f"{source} lacks {', '.join(missing)}"))
    target = (data_dir or nltk_data_dir()) / "corpora" / "wordnet"
    if (target / "lexnames").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))
    try:
        for name in WORDNET_FILES:
            shutil.copyfile(source / name, staging / name)
        lines = [f"{i:02d}\t{name}\t{LEX_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES)]
        (staging / "lexnames").write_text("".join(lines))
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            if not (target / "lexnames").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("prepared WordNet for NLTK in %s (from %s)", target, source)
    return target


def _missing_message(detail: str) -> str:
    return (
        f"WordNet is needed for synonym augmentation and was not found ({detail}).\n"
        "  Online:             python -m nltk.downloader wordnet\n"
        "  Debian/Ubuntu:      apt-get install wordnet-base wordnet-sense-index\n"
        "                      (emotion_lab then prepares it for NLTK on first use)\n"
        "  Or turn augmentation off: data.augment.enabled=false"
    )


def load_wordnet(source: Path = DEBIAN_WORDNET_DIR):
    """NLTK's WordNet reader: NLTK's own copy if it has one, else the prepared Debian copy."""
    data_dir = nltk_data_dir()
    if str(data_dir) not in nltk.data.path:
        nltk.data.path.append(str(data_dir))
    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        if not source.is_dir():
            raise WordNetMissingError(_missing_message(f"no NLTK wordnet corpus, and no {source}")) from None
        prepare_from_debian(source, data_dir)
    from nltk.corpus import wordnet

    wordnet.ensure_loaded()
    return wordnet


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    try:
        wn = load_wordnet()
    except WordNetMissingError as err:
        sys.exit(str(err))
    print(f"WordNet {wn.get_version()} ready; nltk.data.path: {nltk.data.path}")
    print("furious ->", sorted({lemma for s in wn.synsets("furious") for lemma in s.lemma_names()}))
