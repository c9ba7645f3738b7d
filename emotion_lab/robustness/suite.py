"""The behaviour suite: how a model answers text written unlike its training data (CheckList, Ribeiro et
al., ACL 2020).

- **Invariance**: each perturbation of `perturb.PERTURBATIONS` applied to every labelled sentence; a
  case is a sentence whose model input it changed (with `encode`, an uncased tokenizer's input does not
  change with case), and fails when the predicted label differs from the one for the sentence as
  written. Weighted and macro F1 on the perturbed set sit beside the clean ones.
- **Directional**: an intensifier ("really", "so", ...) between "i feel", "i am", ... and the word that
  follows (not before "like", "that", "not", ...); a case fails when the probability of the label
  predicted for the plain sentence falls by more than `tolerance`.
- **Minimum functionality**: sentences written for the suite (`templates.tsv`: the emotion said without
  the "i feel" frame, negation, contrast), each with the label a person would give or one it must not be.

The model is a `predict_proba(texts) -> (n, labels) array`; draws are seeded per sentence, so a run
is reproducible and does not depend on batch order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score, recall_score

from emotion_lab.errors import UserInputError
from emotion_lab.robustness.perturb import PERTURBATIONS, Known, seeded
from emotion_lab.utils.records import md_escape

PredictProba = Callable[[Sequence[str]], np.ndarray]
Encode = Callable[[str], object]  # a sentence -> what the model sees of it (e.g. token ids)
TEMPLATES = Path(__file__).with_name("templates.tsv")
TEMPLATE_HEADER = ("test", "expect", "text")
INTENSIFIERS = ("really", "so", "very", "extremely", "truly")
# What the shipped template tests check; a test of your own templates is described by its name.
MFT_DESCRIPTIONS = {
    "no_frame": "the emotion said without the 'i feel' frame of the training data",
    "negation": "a negated emotion ('i don't feel happy at all') is not that emotion",
    "contrast": "a sentence that names one emotion and ends on another gets the last one",
}
# "i feel" / "i am" / ... then a word an intensifier can qualify: not "like", "that", "not", "so", ...
_INTENSIFY = re.compile(
    r"\b(i (?:feel|felt|am|was)|i'm|im|feeling)\s+(?!(?:like|that|not|so|very|really|too|more|a|an|the|i|it|as|if|"
    r"about|to|this|my|extremely|truly|quite|pretty|much|kind|sort|such|because|when|what|how)\b)(?=[a-z])",
    re.IGNORECASE | re.ASCII,
)
BUILT_IN_TESTS = {*PERTURBATIONS, "intensifier"}


class TemplateError(UserInputError, ValueError):
    """A line of a templates file that is not `test<TAB>expect<TAB>text` with one of the model's labels."""


@dataclass
class Template:
    test: str
    label: str
    negated: bool  # `expect` was "not <label>": any answer but `label` passes
    text: str
    line: int


@dataclass
class TestResult:
    name: str
    kind: str  # invariance | directional | mft
    description: str
    cases: int
    failures: int
    examples: list[dict] = field(default_factory=list)  # the first few failures
    f1_weighted: float | None = None
    f1_macro: float | None = None

    @property
    def failure_rate(self) -> float | None:
        return self.failures / self.cases if self.cases else None

    def to_dict(self) -> dict:
        return {**asdict(self), "failure_rate": self.failure_rate}


def read_templates(path: Path, labels: Sequence[str]) -> list[Template]:
    """The templates of a `test<TAB>expect<TAB>text` file; a bad line stops with its file and line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise TemplateError(f"{path}: cannot read the templates ({type(err).__name__}: {err})") from None
    templates, header_seen = [], False
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if not header_seen:
            if tuple(fields) != TEMPLATE_HEADER:
                raise TemplateError(f"{path}:{number}: the header must be {chr(9).join(TEMPLATE_HEADER)!r}")
            header_seen = True
            continue
        if len(fields) != 3 or not all(f.strip() for f in fields):
            raise TemplateError(f"{path}:{number}: expected 3 tab-separated fields (test, expect, text)")
        test, expect, text = (f.strip() for f in fields)
        if test in BUILT_IN_TESTS:
            raise TemplateError(f"{path}:{number}: test name {test!r} is a built-in test; name yours otherwise")
        negated = expect.startswith("not ")
        label = expect.removeprefix("not ").strip()
        if label not in labels:
            raise TemplateError(
                f"{path}:{number}: label {label!r} is not one of the model's labels ({', '.join(labels)})"
            )
        templates.append(Template(test, label, negated, text, number))
    if not templates:
        raise TemplateError(f"{path}: no templates")
    return templates


def intensify(text: str, rng) -> str:
    """An intensifier after the first "i feel", "i am", "feeling", ... that a qualifiable word follows
    ("i feel sad" -> "i feel really sad"; "i feel like crying" stays)."""
    match = _INTENSIFY.search(text)
    if match is None:
        return text
    return f"{text[: match.end()]}{rng.choice(INTENSIFIERS)} {text[match.end() :]}"


def _f1(gold: Sequence[int], predicted: Sequence[int], n_labels: int) -> tuple[float, float]:
    # Labels neither in gold nor predicted are left out, as torchmetrics does for the test's scores.
    ids = sorted(set(gold) | set(predicted))
    return (
        float(f1_score(gold, predicted, labels=ids, average="weighted", zero_division=0)),
        float(f1_score(gold, predicted, labels=ids, average="macro", zero_division=0)),
    )


def score(gold: Sequence[int], probs: np.ndarray, labels: Sequence[str]) -> dict:
    """Weighted and macro F1 and per-label recall of probabilities against gold label ids."""
    predicted = probs.argmax(-1).tolist()
    weighted, macro = _f1(gold, predicted, len(labels))
    recall = recall_score(gold, predicted, labels=list(range(len(labels))), average=None, zero_division=0)
    return {
        "sentences": len(gold),
        "f1_weighted": weighted,
        "f1_macro": macro,
        "recall": dict(zip(labels, map(float, recall))),
    }


def invariance(
    name: str, texts: Sequence[str], gold: Sequence[int], clean: np.ndarray, predict_proba: PredictProba,
    labels: Sequence[str], seed: int, examples: int, encode: Encode, known: Known, inputs: Sequence[object],
) -> TestResult:  # fmt: skip
    perturb = PERTURBATIONS[name]
    changed = [perturb(text, seeded(seed, name, i), known) for i, text in enumerate(texts)]
    touched = [i for i, (a, b) in enumerate(zip(texts, changed)) if a != b and encode(b) != inputs[i]]
    probs = clean.copy()
    if touched:
        probs[touched] = predict_proba([changed[i] for i in touched])
    before, after = clean.argmax(-1), probs.argmax(-1)
    failed = [i for i in touched if before[i] != after[i]]
    weighted, macro = _f1(gold, after.tolist(), len(labels))
    return TestResult(
        name=name,
        kind="invariance",
        description=(perturb.__doc__ or name).strip().splitlines()[0],
        cases=len(touched),
        failures=len(failed),
        examples=[
            {
                "text": texts[i],
                "changed": changed[i],
                "expected": labels[before[i]],
                "got": labels[after[i]],
                "prob": float(probs[i, after[i]]),
            }
            for i in failed[:examples]
        ],  # fmt: skip
        f1_weighted=weighted,
        f1_macro=macro,
    )


def directional(
    texts: Sequence[str], clean: np.ndarray, predict_proba: PredictProba, labels: Sequence[str], seed: int,
    examples: int, tolerance: float,
) -> TestResult:  # fmt: skip
    changed = [intensify(text, seeded(seed, "intensifier", i)) for i, text in enumerate(texts)]
    touched = [i for i, (a, b) in enumerate(zip(texts, changed)) if a != b]
    probs = predict_proba([changed[i] for i in touched]) if touched else np.zeros((0, len(labels)))
    failed = []
    for row, i in enumerate(touched):
        label = int(clean[i].argmax())
        if clean[i, label] - probs[row, label] > tolerance:
            failed.append((i, label, row))
    return TestResult(
        name="intensifier",
        kind="directional",
        description=f"an intensifier after 'i feel', 'i am', ... lowers the predicted label's probability by "
        f"at most {tolerance}",
        cases=len(touched),
        failures=len(failed),
        examples=[
            {
                "text": texts[i],
                "changed": changed[i],
                "expected": labels[label],
                "prob_before": float(clean[i, label]),
                "prob_after": float(probs[row, label]),
            }
            for i, label, row in failed[:examples]
        ],  # fmt: skip
    )


def minimum_functionality(
    templates: Sequence[Template], predict_proba: PredictProba, labels: Sequence[str], examples: int
) -> list[TestResult]:
    """One result per template test, in the file's order."""
    probs = predict_proba([t.text for t in templates])
    results = []
    for test in dict.fromkeys(t.test for t in templates):
        rows = [(t, p) for t, p in zip(templates, probs) if t.test == test]
        failed = [(t, p) for t, p in rows if (labels[int(p.argmax())] == t.label) == t.negated]
        positive = [(labels.index(t.label), int(p.argmax())) for t, p in rows if not t.negated]
        weighted = macro = None
        if positive:
            weighted, macro = _f1(*zip(*positive), len(labels))
        results.append(
            TestResult(
                name=test,
                kind="mft",
                description=MFT_DESCRIPTIONS.get(test, f"templates '{test}'"),
                cases=len(rows),
                failures=len(failed),
                examples=[
                    {
                        "text": t.text,
                        "expected": ("not " if t.negated else "") + t.label,
                        "got": labels[int(p.argmax())],
                        "prob": float(p.max()),
                    }
                    for t, p in failed[:examples]
                ],  # fmt: skip
                f1_weighted=weighted,
                f1_macro=macro,
            )
        )
    return results


def run_suite(
    predict_proba: PredictProba,
    labels: Sequence[str],
    texts: Sequence[str],
    gold: Sequence[int],
    templates: Sequence[Template],
    seed: int = 0,
    examples: int = 5,
    tolerance: float = 0.1,
    extra_eval: dict[str, tuple[Sequence[str], Sequence[int]]] | None = None,
    encode: Encode = str,
    known: Known = (),
) -> dict:
    """Every test on `texts` (with gold label ids `gold`) and `templates`; evaluation-only sets in
    `extra_eval` (name -> texts, label ids) are scored as they are. `encode` says what the model sees of a
    sentence (a change it does not see is no case); typos never spell a word of `known`. Returns the
    report as a dict."""
    clean = predict_proba(texts)
    inputs = [encode(text) for text in texts]  # what the model saw of each sentence as written, once
    tests = [
        invariance(name, texts, gold, clean, predict_proba, labels, seed, examples, encode, known, inputs)
        for name in PERTURBATIONS
    ]
    tests.append(directional(texts, clean, predict_proba, labels, seed, examples, tolerance))
    tests += minimum_functionality(templates, predict_proba, labels, examples)
    extra = {name: score(y, predict_proba(x), labels) for name, (x, y) in (extra_eval or {}).items()}
    report = {
        "seed": seed,
        "labels": list(labels),
        "clean": score(gold, clean, labels),
        "tests": [t.to_dict() for t in tests],
        "extra_eval": extra,
    }
    report["summary"] = summary(report)
    return report


def summary(report: dict) -> dict:
    """The few numbers a results table carries: one typo's weighted F1 and flip rate, the minimum
    functionality failure rate (all templates, and negation alone), each extra set's weighted / macro F1."""
    by_name = {t["name"]: t for t in report["tests"]}
    mft = [t for t in report["tests"] if t["kind"] == "mft"]
    cases = sum(t["cases"] for t in mft)
    out = {
        "clean_f1_weighted": report["clean"]["f1_weighted"],
        "typo_f1_weighted": by_name["typo"]["f1_weighted"],
        "typo_flip_rate": by_name["typo"]["failure_rate"],
        "mft_failure_rate": sum(t["failures"] for t in mft) / cases if cases else None,
        "negation_failure_rate": by_name["negation"]["failure_rate"] if "negation" in by_name else None,
    }
    for name, scores in report["extra_eval"].items():
        out[f"{name}_f1_weighted"] = scores["f1_weighted"]
        out[f"{name}_f1_macro"] = scores["f1_macro"]
    return out


def markdown(report: dict, title: str) -> str:
    """The report as Markdown: the summary, one row per test, failure examples, extra sets. Every text that
    came from a file (sentences, test, set and label names) is escaped."""
    esc = md_escape

    def num(value, digits=4):
        return "-" if value is None else f"{value:.{digits}f}"

    def pct(value):
        return "-" if value is None else f"{100 * value:.2f}%"

    clean = report["clean"]
    lines = [
        f"# Behaviour: {esc(title)}",
        "",
        f"Seed {report['seed']}; {clean['sentences']} labelled sentences, as written: weighted F1 "
        f"{num(clean['f1_weighted'])}, macro F1 {num(clean['f1_macro'])}.",
        "",
        "| test | kind | cases | failure rate | weighted F1 | macro F1 | what it checks |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in report["tests"]:
        lines.append(
            f"| {esc(t['name'])} | {t['kind']} | {t['cases']} | {pct(t['failure_rate'])} | {num(t['f1_weighted'])} "
            f"| {num(t['f1_macro'])} | {esc(t['description'])} |"
        )
    if report["extra_eval"]:
        lines += ["", "## Evaluation-only sets", "", "| set | sentences | weighted F1 | macro F1 | recall per label |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for name, s in report["extra_eval"].items():
            recall = ", ".join(f"{esc(label)} {value:.2f}" for label, value in s["recall"].items())
            lines.append(
                f"| {esc(name)} | {s['sentences']} | {num(s['f1_weighted'])} | {num(s['f1_macro'])} | {recall} |"
            )
    lines += ["", "## Failures (first of each test)", ""]
    for t in report["tests"]:
        if not t["examples"]:
            continue
        lines.append(f"**{esc(t['name'])}**")
        lines.append("")
        for e in t["examples"]:
            text = esc(e.get("changed", e["text"]))
            if t["kind"] == "directional":
                lines.append(f"- {text}: {esc(e['expected'])} {e['prob_before']:.2f} -> {e['prob_after']:.2f}")
            else:
                lines.append(f"- {text}: expected {esc(e['expected'])}, got {esc(e['got'])} ({e['prob']:.2f})")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
