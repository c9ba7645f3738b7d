"""The suite counts failures as each kind of test defines them, reads its templates strictly, and repeats
itself exactly for a seed."""

from __future__ import annotations

import numpy as np
import pytest

from emotion_lab.labels import LABEL2ID, LABELS
from emotion_lab.robustness.perturb import PERTURBATIONS
from emotion_lab.robustness.suite import (
    INTENSIFIERS,
    TEMPLATES,
    Template,
    TemplateError,
    markdown,
    read_templates,
    run_suite,
)

TEXTS = [
    "i feel sad about my job",
    "i am so happy for james",
    "im loving this",
    "i feel furious",
    "i was scared of it",
    "ok",  # too short for a typo
]
GOLD = [LABEL2ID[x] for x in ("sadness", "joy", "love", "anger", "fear", "joy")]


def one_hot(ids) -> np.ndarray:
    out = np.full((len(ids), len(LABELS)), 0.02)
    out[np.arange(len(ids)), ids] = 0.9
    return out


def constant(label: str):
    return lambda texts: one_hot([LABEL2ID[label]] * len(texts))


def knows_only_the_originals(texts):
    """Gold for the sentences as written, sadness for anything else."""
    gold = dict(zip(TEXTS, GOLD))
    return one_hot([gold.get(t, LABEL2ID["sadness"]) for t in texts])


@pytest.fixture(scope="module")
def templates():
    return read_templates(TEMPLATES, LABELS)


def by_name(report):
    return {t["name"]: t for t in report["tests"]}


def test_a_constant_model_never_flips_and_fails_every_other_label(templates):
    report = run_suite(constant("joy"), LABELS, TEXTS, GOLD, templates)
    tests = by_name(report)
    assert set(tests) == {*PERTURBATIONS, "intensifier", "no_frame", "negation", "contrast"}
    for name in PERTURBATIONS:
        assert tests[name]["failures"] == 0 and tests[name]["kind"] == "invariance"
    # "i feel sad", "im loving", "i feel furious", "i was scared"; not "i am so happy" (already intensified)
    assert tests["intensifier"]["failures"] == 0 and tests["intensifier"]["cases"] == 4
    for test in ("no_frame", "negation", "contrast"):
        rows = [t for t in templates if t.test == test]
        # Joy passes the lines that expect joy and fails those that expect "not joy"; all others fail.
        expected = sum((t.label == "joy") == t.negated for t in rows)
        assert tests[test]["cases"] == len(rows) and tests[test]["failures"] == expected > 0
    assert report["clean"]["f1_weighted"] == pytest.approx(2 / 6 * 0.5)  # joy: precision 2/6, recall 1


def test_every_changed_sentence_counts_once(templates):
    report = run_suite(knows_only_the_originals, LABELS, TEXTS, GOLD, templates, examples=2)
    tests = by_name(report)
    assert report["clean"]["f1_weighted"] == 1.0
    # A typo reaches the five sentences with a word of 4+ letters; each changed one flips but the sad one.
    assert tests["typo"]["cases"] == 5 and tests["typo"]["failures"] == 4
    assert tests["typo"]["failure_rate"] == pytest.approx(0.8) and tests["typo"]["f1_weighted"] < 1.0
    assert len(tests["typo"]["examples"]) == 2 and tests["typo"]["examples"][0]["got"] == "sadness"
    assert tests["mention"]["cases"] == 6 and tests["mention"]["failures"] == 5
    assert tests["contraction"]["cases"] == 2 and tests["first_name"]["cases"] == 1  # "i am", "im"; james
    assert report["summary"]["typo_flip_rate"] == tests["typo"]["failure_rate"]
    assert report["summary"]["typo_f1_weighted"] == tests["typo"]["f1_weighted"]


@pytest.mark.parametrize(
    ("sentence", "changed"),
    [
        ("i feel sad", True),
        ("i am angry at him", True),
        ("im loving this", True),
        ("I feel lonely", True),
        ("i feel like crying", False),
        ("i feel that nobody cares", False),
        ("i am not happy", False),
        ("i am so happy", False),
        ("he is angry", False),  # only the writer's own feeling
    ],
)
def test_the_intensifier_qualifies_a_feeling_not_a_phrase(sentence, changed):
    from emotion_lab.robustness.perturb import seeded
    from emotion_lab.robustness.suite import intensify

    out = intensify(sentence, seeded(0))
    assert (out != sentence) == changed
    if changed:
        added = [w for w in out.split() if w not in sentence.split()]
        assert len(added) == 1 and added[0] in INTENSIFIERS and out.replace(f" {added[0]}", "", 1) == sentence


def test_a_change_the_model_cannot_see_is_no_case(templates):
    lower = run_suite(constant("joy"), LABELS, TEXTS, GOLD, templates, encode=str.lower)
    assert by_name(lower)["upper_case"]["cases"] == 0 and by_name(lower)["upper_case"]["failure_rate"] is None
    assert by_name(lower)["sentence_case"]["cases"] == 6  # the final period is seen
    assert by_name(run_suite(constant("joy"), LABELS, TEXTS, GOLD, templates))["upper_case"]["cases"] == 6


def test_markdown_shows_file_text_literally():
    texts = ["i feel <script>alert(1)</script> `x` [l](http://a) | b"]
    templates = [Template("no_frame", "joy", False, "<img src=x onerror=alert(1)>", 1)]

    def flips_on_any_change(batch):  # so every perturbed form is a failure the report shows
        return one_hot([1 if t == texts[0] else 0 for t in batch])

    text = markdown(run_suite(flips_on_any_change, LABELS, texts, [1], templates), "t")
    assert "<script>" not in text and "<img" not in text and "](http" not in text
    assert "&lt;script&gt;" in text and "\\`x\\`" in text and "\\|" in text


def test_directional_fails_only_a_large_fall():
    def falls(texts, by):
        out = one_hot([LABEL2ID["sadness"]] * len(texts))
        intensified = [t not in TEXTS and bool(set(t.split()) & set(INTENSIFIERS)) for t in texts]
        out[:, LABEL2ID["sadness"]] -= [by if yes else 0 for yes in intensified]
        return out

    texts, gold = ["i feel sad"], [0]
    small = run_suite(lambda t: falls(t, 0.05), LABELS, texts, gold, [], tolerance=0.1)
    large = run_suite(lambda t: falls(t, 0.3), LABELS, texts, gold, [], tolerance=0.1)
    assert by_name(small)["intensifier"]["failures"] == 0
    assert by_name(large)["intensifier"]["failures"] == 1
    assert by_name(large)["intensifier"]["examples"][0]["prob_after"] == pytest.approx(0.6)


def test_a_seed_repeats_the_report_and_another_changes_the_texts(templates):
    runs = [run_suite(knows_only_the_originals, LABELS, TEXTS, GOLD, templates, seed=s) for s in (1, 1, 2)]
    assert runs[0] == runs[1]
    changed = [[e["changed"] for e in by_name(r)["url"]["examples"]] for r in runs]
    assert changed[0] != changed[2]


def test_extra_sets_are_scored_and_summarised(templates):
    extra = {"ood": (["x", "y", "z"], [1, 1, 0])}
    report = run_suite(constant("joy"), LABELS, TEXTS, GOLD, templates, extra_eval=extra)
    assert report["extra_eval"]["ood"]["recall"]["joy"] == 1.0 and report["extra_eval"]["ood"]["sentences"] == 3
    assert report["summary"]["ood_f1_weighted"] == pytest.approx(2 / 3 * 0.8)
    text = markdown(report, "constant")
    assert "| ood | 3 |" in text and text.count("| invariance |") == len(PERTURBATIONS)


def test_the_shipped_templates_cover_every_label_and_test():
    templates = read_templates(TEMPLATES, LABELS)
    for test in ("no_frame", "negation", "contrast"):
        assert {t.label for t in templates if t.test == test} == set(LABELS)
    assert all(t.negated for t in templates if t.test == "negation")
    assert len({t.text.lower() for t in templates}) == len(templates)
    assert not any("feel" in t.text for t in templates if t.test == "no_frame")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            "test\texpect\ttext\nno_frame\tdisgust\tugh\n",
            r"bad\.tsv:2: label 'disgust' is not one of the model's labels",
        ),
        ("test\texpect\ttext\n# c\nnegation\tnot hate\tno\n", r"bad\.tsv:3: label 'hate'"),
        ("test\texpect\ttext\nno_frame\tjoy\n", r"bad\.tsv:2: expected 3 tab-separated fields"),
        ("test,expect,text\n", r"bad\.tsv:1: the header must be"),
        ("# only a comment\n", r"bad\.tsv: no templates"),
        ("test\texpect\ttext\ntypo\tjoy\tyay\n", r"bad\.tsv:2: test name 'typo' is a built-in test"),
    ],
)
def test_a_bad_template_line_is_named(tmp_path, content, problem):
    (tmp_path / "bad.tsv").write_text(content)
    with pytest.raises(TemplateError, match=problem):
        read_templates(tmp_path / "bad.tsv", LABELS)
