"""WordNet 3.0 for NLTK, offline.

NLTK reads WordNet from its data path (`nltk.download("wordnet")` puts it there, and needs a
network). Offline, Debian's `wordnet-base` and `wordnet-sense-index` packages hold the same
WordNet 3.0 in /usr/share/wordnet, but NLTK will not read that folder in place: its path guard
refuses folders outside the data path (a symlink resolves outside too), and its reader needs a
`lexnames` file that Debian does not ship. So a one-time preparation copies the dictionary files
into an NLTK data folder this project controls (`~/.cache/emotion_lab/nltk_data`, or
`$EMOTION_LAB_NLTK_DATA`), writes `lexnames` (the table of lexicographer files documented in
lexnames(5WN)), and adds that folder to `nltk.data.path`.

    python -m emotion_lab.data.wordnet           # prepare now and print where (also done on first use)
    python -m emotion_lab.data.wordnet --setup   # `make wordnet`: get WordNet by the first way that works

Only augmentation (off by default) and its tests need WordNet, so `make test` runs `make wordnet` and
`make setup` / `make train` never do (no apt-get for a plain training run). `--setup` tries, in order:
a WordNet NLTK already reads; Debian's packages (installed, or installed now with apt-get where this
user may); NLTK's downloader (needs a network); otherwise it stops with one message naming each way.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import nltk

from emotion_lab.errors import UserInputError

log = logging.getLogger(__name__)

DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")
DEBIAN_PACKAGES = ("wordnet-base", "wordnet-sense-index")
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


MANUAL_WAYS = (
    "`python -m nltk.downloader wordnet` (online) or `apt-get install wordnet-base wordnet-sense-index` "
    "(emotion_lab prepares Debian's copy for NLTK)"
)


def _missing_message(detail: str) -> str:
    return (
        f"WordNet is needed for synonym augmentation and was not found ({detail}): run `make wordnet` "
        f"(or `python -m emotion_lab.data.wordnet --setup`), or get it with {MANUAL_WAYS}, "
        "or set data.augment.enabled=false"
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

    try:
        wordnet.ensure_loaded()
        wordnet.synsets("happy")  # opens the index and data files too, not only lexnames
    except (LookupError, OSError) as err:
        # NLTK's LookupError text is a many-line banner that names only its downloader.
        reason = "NLTK could not open it" if isinstance(err, LookupError) else " ".join(str(err).split())
        raise WordNetMissingError(_missing_message(f"the WordNet NLTK found is unreadable: {reason}")) from None
    return wordnet


def _nltk_has_wordnet() -> bool:
    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        return False
    return True


def apt_prefix() -> list[str] | None:
    """How this user may run apt-get: [] as root, `sudo -n` with sudo that asks no password; None where
    there is no apt-get or this user may not."""
    if shutil.which("apt-get") is None:
        return None
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") is None:
        return None
    try:
        asks_password = subprocess.run(["sudo", "-n", "true"], capture_output=True, timeout=30).returncode != 0
    except (OSError, subprocess.TimeoutExpired):
        return None
    return None if asks_password else ["sudo", "-n"]


def apt_install(packages: tuple[str, ...] = DEBIAN_PACKAGES) -> bool:
    """Install Debian packages where this user may run apt-get (apt_prefix); refreshes the package lists
    once if the first try fails. True if it worked."""
    prefix = apt_prefix()
    if prefix is None:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def run(*args: str) -> bool:
        try:
            return (
                subprocess.run([*prefix, "apt-get", *args], env=env, capture_output=True, timeout=900).returncode == 0
            )
        except (OSError, subprocess.TimeoutExpired):
            return False

    install = ("install", "-y", "-qq", "--no-install-recommends", *packages)
    return run(*install) or (run("update", "-qq") and run(*install))


def nltk_download(data_dir: Path) -> bool:
    """NLTK's downloader (needs a network); a closed network fails within the timeout, never hangs."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        return bool(nltk.download("wordnet", download_dir=str(data_dir), quiet=True))
    except Exception:  # noqa: BLE001 - any failure means: this way did not work, try the next
        return False
    finally:
        socket.setdefaulttimeout(previous)


def setup_wordnet(source: Path = DEBIAN_WORDNET_DIR) -> str:
    """Leave WordNet ready for NLTK by the first way that works; returns which one did."""
    data_dir = nltk_data_dir()
    if str(data_dir) not in nltk.data.path:
        nltk.data.path.append(str(data_dir))
    if _nltk_has_wordnet():
        return "NLTK's WordNet (already present)"
    if source.is_dir() or (apt_install() and source.is_dir()):
        prepare_from_debian(source, data_dir)
        return f"Debian's {' + '.join(DEBIAN_PACKAGES)}, prepared in {data_dir}"
    if nltk_download(data_dir) and _nltk_has_wordnet():
        return f"NLTK's downloader, into {data_dir}"
    raise WordNetMissingError(
        "WordNet not found (no NLTK copy; apt-get could not install it here; no network for NLTK): "
        f"get it with {MANUAL_WAYS}, then rerun `make wordnet`"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Prepare WordNet for NLTK (synonym augmentation).")
    parser.add_argument("--setup", action="store_true", help="get WordNet by the first way that works (make wordnet)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.setup:
            print(f"WordNet ready: {setup_wordnet()}")
            sys.exit(0)
        wn = load_wordnet()
    except WordNetMissingError as err:
        sys.exit(str(err))
    print(f"WordNet {wn.get_version()} ready; nltk.data.path: {nltk.data.path}")
    print("furious ->", sorted({lemma for s in wn.synsets("furious") for lemma in s.lemma_names()}))
