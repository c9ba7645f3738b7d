import random
from pathlib import Path

import pytest
from datasets import Dataset

from emotion_lab.data import wordnet as wordnet_module
from emotion_lab.data.augment import SynonymAugmenter
from emotion_lab.data.datamodule import EmotionDataModule
from emotion_lab.data.wordnet import WordNetMissingError, load_wordnet, prepare_from_debian


@pytest.fixture(scope="module")
def augmenter():
    aug = SynonymAugmenter(copies=1, n=2, seed=0)
    aug.check_ready()
    return aug


def test_synonyms_come_from_the_words_own_synset(augmenter):
    wn = load_wordnet()
    assert "astonished" in augmenter.synonyms("amazed")
    assert "frightened" in augmenter.synonyms("scared")
    for word in ("amazed", "furious", "lonely", "scared"):
        synonyms = augmenter.synonyms(word)
        assert synonyms, word
        # Every candidate shares one synset with the word: one meaning, no drift across senses.
        shared = [
            s
            for s in wn.synsets(word)
            if word in s.lemma_names() and all(c.replace(" ", "_") in s.lemma_names() for c in synonyms)
        ]
        assert shared, (word, synonyms)


def test_multiword_lemmas_become_spaced_lower_case_words(augmenter):
    synonyms = augmenter.synonyms("day")
    assert "mean solar day" in synonyms
    assert all("_" not in s and s == s.lower() for s in synonyms)


def test_protected_words_never_change():
    aug = SynonymAugmenter(p=1.0, seed=3, protected_words=["lonely"])
    text = "i am not very lonely and i never feel so amazed"
    for seed in range(20):
        out, count = aug.augment_text(text, random.Random(seed))
        kept = [w for w in out.split() if w in {"not", "very", "lonely", "never", "so", "i", "and"}]
        assert kept == ["i", "not", "very", "lonely", "and", "i", "never", "so"]
        assert count == 2 and "amazed" not in out  # feel and amazed: the only eligible words


def test_n_limits_the_replacements(augmenter):
    text = "i feel amazed and scared and lonely about the furious crowd"
    for seed in range(10):
        out, count = augmenter.augment_text(text, random.Random(seed))
        changed = (
            sum(a != b for a, b in zip(text.split(), out.split())) if len(out.split()) == len(text.split()) else count
        )
        assert count == 2 and changed <= 2


@pytest.mark.parametrize(
    "text", ["", "   ", "i am so", "im just not", "qwxz blorft", "je suis très fâché", "i feel 😊 amazed"]
)
def test_unusable_input_comes_back_unchanged(augmenter, text):
    assert augmenter.augment_text(text, random.Random(0)) == (text, 0)


def test_same_seed_same_set_other_seed_other_set():
    train = Dataset.from_dict(
        {"text": ["i feel amazed today", "i feel scared and lonely", "the furious crowd"] * 5, "label": [5, 4, 3] * 5}
    )

    def augmented(seed):
        return SynonymAugmenter(copies=2, n=1, seed=seed).augment_dataset(train)["text"]

    first = augmented(1)
    assert first == augmented(1)
    assert first != augmented(2)
    assert first[: len(train)] == train["text"]  # originals first, untouched
    assert len(first) > len(train)


def test_only_the_training_split_is_augmented(data_dir, tiny_encoder):
    plain = EmotionDataModule(tiny_encoder, dir=str(data_dir))
    plain.setup()
    augmented = EmotionDataModule(tiny_encoder, dir=str(data_dir), augment=SynonymAugmenter(copies=1, n=1, seed=0))
    augmented.prepare_data()
    augmented.setup()
    assert len(augmented.datasets["train"]) > len(plain.datasets["train"])
    for split in ("validation", "test"):
        assert augmented.datasets[split].with_format(None)["text"] == plain.datasets[split].with_format(None)["text"]
    # Copy i is original i augmented (its own seeded rng) and carries original i's label.
    aug = augmented.augmenter
    originals = plain.datasets["train"].with_format(None)
    expected = []
    for index, (text, label) in enumerate(zip(originals["text"], originals["label"])):
        copy, count = aug.augment_text(text, random.Random(f"{aug.seed}:{index}:0"))
        if count and copy != text:
            expected.append((copy, label))
    copies = (
        augmented.datasets["train"].with_format(None).select(range(len(originals), len(augmented.datasets["train"])))
    )
    assert expected and list(zip(copies["text"], copies["label"])) == expected


def test_disabled_augmenter_is_not_used(data_dir, tiny_encoder):
    dm = EmotionDataModule(tiny_encoder, dir=str(data_dir), augment=SynonymAugmenter(enabled=False))
    assert dm.augmenter is None
    assert SynonymAugmenter(copies=0).enabled is False


def test_missing_wordnet_names_make_wordnet_and_each_way(tmp_path, monkeypatch):
    monkeypatch.setenv(wordnet_module.NLTK_DATA_ENV, str(tmp_path / "nltk_data"))
    monkeypatch.setattr(wordnet_module.nltk.data, "path", [])
    with pytest.raises(WordNetMissingError) as err:
        load_wordnet(source=tmp_path / "no-wordnet-here")
    message = str(err.value)
    assert "`make wordnet`" in message and "python -m emotion_lab.data.wordnet --setup" in message
    assert "python -m nltk.downloader wordnet" in message
    assert "apt-get install wordnet-base wordnet-sense-index" in message
    assert "\n" not in message


def test_an_unreadable_nltk_wordnet_is_one_line_naming_make_wordnet(tmp_path, monkeypatch):
    from nltk.corpus.reader.wordnet import WordNetCorpusReader
    from nltk.corpus.util import LazyCorpusLoader

    (tmp_path / "nltk_data" / "corpora" / "wordnet").mkdir(parents=True)  # found by NLTK, but empty
    monkeypatch.setenv(wordnet_module.NLTK_DATA_ENV, str(tmp_path / "nltk_data"))
    monkeypatch.setattr(wordnet_module.nltk.data, "path", [])
    # nltk.corpus.wordnet as before its first use: this process may have loaded the real one already.
    monkeypatch.setattr(wordnet_module.nltk.corpus, "wordnet", LazyCorpusLoader("wordnet", WordNetCorpusReader, None))
    with pytest.raises(WordNetMissingError, match="unreadable: .*lexnames.*`make wordnet`") as err:
        load_wordnet(source=tmp_path / "no-wordnet-here")
    assert "\n" not in str(err.value)


def test_nltks_lookup_banner_becomes_one_line_naming_make_wordnet(tmp_path, monkeypatch):
    monkeypatch.setenv(wordnet_module.NLTK_DATA_ENV, str(tmp_path / "nltk_data"))
    monkeypatch.setattr(wordnet_module.nltk.data, "find", lambda resource: str(tmp_path))

    class NotFound:  # NLTK's lazy loader when its own lookup fails
        def ensure_loaded(self):
            raise LookupError("\n****\n  Resource wordnet not found.\n  >>> nltk.download('wordnet')\n****\n")

    monkeypatch.setattr(wordnet_module.nltk.corpus, "wordnet", NotFound())
    with pytest.raises(WordNetMissingError, match="NLTK could not open it.*`make wordnet`") as err:
        load_wordnet(source=tmp_path / "no-wordnet-here")
    assert "\n" not in str(err.value)


def test_preparation_from_debian_is_complete_and_readable(tmp_path, monkeypatch):
    # `make test` runs `make wordnet`, which installs Debian's packages where apt-get may (a fresh CI machine):
    # skipped only where that way cannot exist, never silently where one apt-get would make it run.
    if not wordnet_module.DEBIAN_WORDNET_DIR.is_dir():
        if wordnet_module.apt_prefix() is None:
            pytest.skip("no apt-get this user may run: Debian's WordNet cannot be installed here")
        # `make wordnet` stops at an NLTK copy it finds; this test needs Debian's own files.
        wordnet_module.apt_install()
    if not wordnet_module.DEBIAN_WORDNET_DIR.is_dir():
        pytest.fail(
            f"Debian's WordNet is missing ({wordnet_module.DEBIAN_WORDNET_DIR}): "
            "`apt-get install wordnet-base wordnet-sense-index` (`make wordnet` does so where NLTK has no WordNet)"
        )
    corpus = prepare_from_debian(data_dir=tmp_path)
    monkeypatch.setattr(wordnet_module.nltk.data, "path", [str(tmp_path)])  # NLTK reads only its data path
    lexnames = (corpus / "lexnames").read_text().splitlines()
    assert len(lexnames) == 45 and lexnames[12] == "12\tnoun.feeling\t1"
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    reader = WordNetCorpusReader(str(corpus), None)
    assert "enraged" in {name for s in reader.synsets("furious") for name in s.lemma_names()}
    assert not list(Path(tmp_path, "corpora").glob(".wordnet-*"))  # no staging folder left behind


@pytest.mark.parametrize("kwargs", [{"copies": -1}, {"n": 0}, {"p": 1.5}])
def test_bad_augment_options_are_named(kwargs):
    with pytest.raises(ValueError, match="data.augment"):
        SynonymAugmenter(**kwargs)
