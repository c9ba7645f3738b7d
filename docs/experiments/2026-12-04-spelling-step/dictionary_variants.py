"""Which dictionary should the spelling step correct against? One typo per sentence (the behaviour
suite's four kinds) on the first N validation sentences, read by a saved model with and without a
prototype of the step, for four dictionary variants (symspellpy, one edit):

- train:   correct words outside (training words + tokenizer whole words) to the most frequent training word
- train4:  the same, words of 4+ letters only
- english: symspellpy's English frequency list (82,834 words, its counts) as the dictionary
- both:    the training words and the English list together, English counts
- guard:   as train, and words of the English list are never corrected (what emotion_lab ships)

usage: python dictionary_variants.py MODEL TRAIN_TXT VAL_TXT VARIANT [N]
"""

import collections
import importlib.resources as ir
import re
import sys

import numpy as np
from sklearn.metrics import f1_score
from symspellpy import SymSpell, Verbosity

from emotion_lab.inference.predictor import EmotionPredictor
from emotion_lab.robustness.perturb import PERTURBATIONS, seeded, vocabulary_words

model, train_txt, val_txt, variant = sys.argv[1:5]
limit = int(sys.argv[5]) if len(sys.argv) > 5 else 600
p = EmotionPredictor.from_pretrained(model)
labels = list(p.labels)
rows = [line.rsplit(";", 1) for line in open(val_txt).read().splitlines()][:limit]
texts = [r[0] for r in rows]
gold = np.array([labels.index(r[1]) for r in rows])
tok_words = vocabulary_words(p.tokenizer)
counts = collections.Counter(
    w for line in open(train_txt) for w in re.findall(r"[a-z]+", line.rsplit(";", 1)[0].lower())
)
english = str(ir.files("symspellpy") / "frequency_dictionary_en_82_765.txt")
sym = SymSpell(max_dictionary_edit_distance=2)
if variant in ("train", "both", "guard", "train4"):
    for w, c in counts.items():
        sym.create_dictionary_entry(w, c)
if variant in ("english", "both"):
    sym.load_dictionary(english, 0, 1)
known = set(counts) | tok_words
if variant == "guard":
    known |= {line.split()[0] for line in open(english)}
minlen = 4 if variant == "train4" else 3
print("variant", variant, "dictionary", len(sym.words), "never corrected", len(known))
WORD = re.compile(r"(?<![@#\w/.])([A-Za-z]+)(?![\w/@])")


def correct(text):
    def fix(m):
        w = m.group(1)
        if w.lower() in known or len(w) < minlen:
            return w
        s = sym.lookup(w.lower(), Verbosity.TOP, max_edit_distance=1, transfer_casing=False)
        if not s:
            return w
        c = s[0].term
        return c.upper() if w.isupper() and len(w) > 1 else (c[:1].upper() + c[1:] if w[:1].isupper() else c)

    return WORD.sub(fix, text)


def predicted(batch, fix):
    batch = [correct(t) for t in batch] if fix else list(batch)
    return np.array([[q.probs[label] for label in labels] for q in p.predict(batch)]).argmax(-1)


for fix in (False, True):
    clean = predicted(texts, fix)
    line = [f"step={'on' if fix else 'off'} clean wF1 {f1_score(gold, clean, average='weighted'):.4f}"]
    for name in ("typo", "typo_swap", "typo_drop", "typo_insert", "typo_keyboard"):
        changed = [PERTURBATIONS[name](t, seeded(0, name, i), tok_words) for i, t in enumerate(texts)]
        idx = [i for i, (a, b) in enumerate(zip(texts, changed)) if a != b]
        after = clean.copy()
        after[idx] = predicted([changed[i] for i in idx], fix)
        flips = sum(after[i] != clean[i] for i in idx)
        line.append(f"{name} flipped {flips / len(idx):.2%} wF1 {f1_score(gold, after, average='weighted'):.4f}")
    print(" | ".join(line), flush=True)
print("clean sentences the step changes:", sum(correct(t) != t for t in texts))
