"""docs/extending.md, run: its code blocks are the code these tests run, so the page cannot drift from them.

A block whose first line is `# <path>` is written into a scratch project (`my_lab/`, `conf/`); the
`python -m emotion_lab.<command>` lines are run (each training command composed, the last one, all four
extensions together, trained for one epoch on the tiny encoder and synthetic CSV files); a Python block
without a path is executed with `run_dir` bound to that run's folder.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest
import torch

from emotion_lab.data.contract import missing_members
from emotion_lab.errors import ConfigError, ModelLoadError
from emotion_lab.inference.predictor import EmotionPredictor
from emotion_lab.labels import LABELS
from emotion_lab.models.checkpoints import load_classifier
from emotion_lab.models.losses import CrossEntropyLoss
from emotion_lab.train import train
from tests.conftest import QUIET, compose_config, synthetic_lines

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)
PATH_LINE = re.compile(r"# ((?:my_lab|conf)/[\w/]+\.(?:py|yaml))\n")
PACKAGE = "my_lab"
DATA_FOLDER = "data/my_emotions"  # where conf/data/csv_emotions.yaml looks, relative to the project
SENTENCE = "i feel so happy today"


def blocks() -> list[tuple[str, str]]:
    """(language, text) of every fenced block of the page, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(DOC.read_text())]


def file_blocks() -> dict[str, str]:
    """Project path -> file text, for the blocks that start with `# <path>`."""
    found = {}
    for _, text in blocks():
        match = PATH_LINE.match(text)
        if match:
            found[match.group(1)] = text
    return found


def snippets() -> list[str]:
    """The Python blocks that are no file: run as they stand."""
    return [text for language, text in blocks() if language == "python" and not PATH_LINE.match(text)]


def commands() -> list[list[str]]:
    """The command lines of the page's bash blocks, split as a shell would."""
    found = []
    for language, text in blocks():
        if language == "bash":
            found += [shlex.split(line, comments=True) for line in text.replace("\\\n", " ").splitlines() if line]
    return found


def train_overrides(project: Path) -> list[list[str]]:
    """The overrides of each `python -m emotion_lab.train` line, with ${PWD} the project folder."""
    return [
        [arg.replace("${PWD}", str(project)) for arg in command[3:]]
        for command in commands()
        if command[:3] == ["python", "-m", "emotion_lab.train"]
    ]


def write_csv_splits(folder: Path) -> None:
    """The conftest's synthetic sentences as CSV files with a header and label names."""
    folder.mkdir(parents=True)
    for i, (split, n) in enumerate((("train", 60), ("validation", 24), ("test", 24))):
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(["text", "label"])
            writer.writerows(line.rsplit(";", 1) for line in synthetic_lines(n, seed=i))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The page's files in a scratch project, its package importable, and CSV data where the config looks."""
    root = tmp_path_factory.mktemp("my_project")
    (root / PACKAGE).mkdir()
    (root / PACKAGE / "__init__.py").write_text("")
    for path, text in file_blocks().items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    write_csv_splits(root / DATA_FOLDER)
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def run(project, tiny_encoder, tmp_path_factory):
    """The page's last training command (all four extensions), one epoch on the tiny encoder, from the project."""
    tiny = [
        f"model.net.encoder_name={tiny_encoder}",
        "data.batch_size=8",
        "trainer.max_epochs=1",
        "trainer.num_sanity_val_steps=0",
        *QUIET,
    ]
    out = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)  # the data folder in the config is relative, as the page says
        metrics, objects = train(compose_config("train", [*train_overrides(project)[-1], *tiny], out))
    ckpt = Path(objects["trainer"].checkpoint_callback.best_model_path)
    return {"dir": out, "metrics": metrics, "ckpt": ckpt, "model": objects["model"], "data": objects["datamodule"]}


def checkpoint(run) -> dict:
    return torch.load(run["ckpt"], map_location="cpu", weights_only=True)


def test_every_block_of_the_page_is_run_by_these_tests():
    kinds = []
    for language, text in blocks():
        if PATH_LINE.match(text):
            kinds.append("file")
        elif language == "python":
            kinds.append("snippet")
        elif language == "bash":
            kinds.append("command")
        else:
            kinds.append(language)
    assert kinds.count("text") == 1  # the project layout, checked below
    assert kinds.count("snippet") == len(SNIPPET_TESTS), "a Python block no test runs"
    assert set(kinds) == {"file", "snippet", "command", "text"}
    assert {c[2] for c in commands()} == {"emotion_lab.train", "emotion_lab.report"}
    assert all(c[:2] == ["python", "-m"] for c in commands())


def test_the_layout_lists_the_files_the_page_writes():
    tree = next(text for language, text in blocks() if language == "text")
    listed = {line.split()[0] for line in tree.splitlines()[1:]}
    assert listed == {f"{PACKAGE}/__init__.py", *file_blocks()}


def test_each_command_composes_and_the_last_runs_all_of_them(project, tmp_path):
    commands_ = train_overrides(project)
    for overrides in commands_:
        cfg = compose_config("train", overrides, tmp_path)
        assert cfg.model.net.encoder_name  # the data config reads it
    searchpath = {o for o in commands_[0] if o.startswith("hydra.searchpath")}
    sections = {o for overrides in commands_[:-1] for o in overrides}
    assert set(commands_[-1]) == sections and len(commands_[-1]) == len(set(commands_[-1]))
    assert all(searchpath <= set(overrides) for overrides in commands_)
    cfg = compose_config("train", commands_[-1], tmp_path)
    targets = [cfg.model.net._target_, cfg.loss._target_, cfg.data._target_, cfg.callbacks.confidence_figure._target_]
    assert all(t.startswith(PACKAGE + ".") for t in targets), targets


def test_the_network_records_its_config_and_loads_only_when_trusted(run, tiny_encoder):
    recorded = checkpoint(run)["hyper_parameters"]["net"]
    assert recorded == {
        "_target_": "my_lab.nets.AttentionPoolNet",
        "encoder_name": tiny_encoder,
        "heads": 2,  # from the command line, over the YAML's 4
        "dropout": 0.1,
        "freeze_encoder": False,
        "frozen_layers": 0,
        "num_classes": len(LABELS),
    }
    folder = run["dir"] / "model"  # written by the run, which trusted its own module
    assert json.loads((folder / "emotion_lab.json").read_text())["net"] == recorded
    with pytest.raises(ModelLoadError, match=r"refused.*trusted_modules=\[my_lab.nets\]"):
        EmotionPredictor.from_pretrained(folder)
    loaded = EmotionPredictor.from_pretrained(folder, trusted_modules=[PACKAGE])
    assert type(loaded.net).__name__ == "AttentionPoolNet" and loaded.net.attention.num_heads == 2


def test_the_network_ignores_padding_and_returns_attention_as_the_consumers_read_it(project, tiny_encoder):
    from my_lab.nets import AttentionPoolNet

    from emotion_lab.encoders.loading import load_tokenizer

    torch.manual_seed(0)
    net = AttentionPoolNet(tiny_encoder, heads=2).eval()
    tokenizer = load_tokenizer(tiny_encoder)
    alone = tokenizer([SENTENCE], return_tensors="pt")
    longer = SENTENCE + " and i cannot stop smiling at everyone"
    padded = tokenizer([SENTENCE, longer], padding=True, return_tensors="pt")
    with torch.inference_mode():
        logits_alone = net(alone["input_ids"], alone["attention_mask"])
        hidden, mask = net.encode(padded["input_ids"], padded["attention_mask"])
        logits, weights = net.head(hidden, mask, return_attention=True)
    assert torch.allclose(logits[:1], logits_alone, atol=1e-5)
    n = int(alone["attention_mask"].sum())
    assert weights.shape == (2, 1, padded["input_ids"].shape[1])
    assert torch.allclose(weights.sum(-1), torch.ones(2, 1)) and (weights[0, :, n:] == 0).all()


def test_predictions_come_with_the_words_the_network_attended_to(run):
    namespace = {"run_dir": run["dir"]}
    exec(snippets()[0], namespace)
    prediction, words = namespace["prediction"], namespace["words"]
    assert prediction.label in LABELS and len(prediction.top_words) == 3
    assert {piece for piece, _ in prediction.top_words} <= set(SENTENCE.split())
    assert words.words == SENTENCE.split() and sum(words.weights) == pytest.approx(1.0)
    assert (run["dir"] / "attention_words.png").is_file()  # the run's figure of the same attention


@pytest.mark.slow
def test_the_network_exports_to_onnx_with_its_attention(run, tmp_path):
    shutil.copytree(run["dir"] / "model", tmp_path / "model")  # the page's export adds files to the folder
    namespace = {"run_dir": tmp_path}
    exec(snippets()[1], namespace)
    assert (tmp_path / "model" / "model.onnx").is_file()
    torch_prediction = EmotionPredictor.from_pretrained(tmp_path / "model", trusted_modules=[PACKAGE]).predict(
        [SENTENCE], top_words=3
    )[0]
    onnx_prediction = namespace["onnx_prediction"]
    assert onnx_prediction.label == torch_prediction.label
    assert [w for w, _ in onnx_prediction.top_words] == [w for w, _ in torch_prediction.top_words]
    for (_, ours), (_, theirs) in zip(onnx_prediction.top_words, torch_prediction.top_words):
        assert ours == pytest.approx(theirs, abs=1e-4)


SNIPPET_TESTS = (
    test_predictions_come_with_the_words_the_network_attended_to,
    test_the_network_exports_to_onnx_with_its_attention,
)


def test_the_loss_gets_the_class_counts_and_is_recorded_by_class_path(run, caplog):
    from my_lab.losses import ClassBalancedLoss

    trained = run["model"].loss_fn
    expected = ClassBalancedLoss(beta=0.99)  # loss.beta from the command line, over the YAML's 0.999
    expected.set_class_counts(run["data"].class_counts)
    assert isinstance(trained, ClassBalancedLoss) and torch.equal(trained.weights, expected.weights)
    stored = checkpoint(run)["hyper_parameters"]["loss"]
    assert stored == {"_target_": "my_lab.losses.ClassBalancedLoss", "_partial_": True, "beta": 0.99}
    model = load_classifier(run["ckpt"], trusted_modules=[PACKAGE])
    assert type(model.loss_fn) is CrossEntropyLoss  # only emotion_lab's losses are rebuilt
    assert "not one of emotion_lab's" in caplog.text


def test_the_loss_trains_with_weights_from_the_training_split(project):
    from my_lab.losses import ClassBalancedLoss

    loss = ClassBalancedLoss(beta=0.99)
    loss.set_class_counts([10, 10, 10, 10, 10, 50])
    assert loss.weights.mean() == pytest.approx(1.0) and loss.weights[5] < loss.weights[0]
    logits, labels = torch.randn(4, 6, dtype=torch.bfloat16), torch.tensor([0, 1, 5, 5])
    assert loss(logits, labels).dtype == torch.float32


def test_the_datamodule_meets_the_contract_and_reaches_every_reader(run, project, tmp_path):
    from my_lab.data import CsvEmotions, read_split

    assert missing_members(CsvEmotions(DATA_FOLDER, "unused")) == []
    assert run["metrics"]["test/f1_weighted"] >= 0
    assert json.loads((run["dir"] / "metrics.json").read_text())["data_source"] == f"CSV files in {DATA_FOLDER}"
    assert json.loads((run["dir"] / "model" / "emotion_lab.json").read_text())["max_length"] == 64  # not 128
    # The test report paired sentences with predictions: eval_examples came in the loader's order.
    assert (run["dir"] / "errors.csv").is_file()
    assert (run["dir"] / "figures" / "class_distribution.png").is_file()  # split_counts
    bad = tmp_path / "train.csv"
    bad.write_text("text,label\ni am so bored,boredom\n")
    with pytest.raises(ConfigError, match=r"labels \['boredom'\] are not among"):
        read_split(bad)


def test_the_callback_figure_reaches_the_run_report(run, caplog):
    figure = run["dir"] / "figures" / "confidence.png"
    assert figure.is_file() and (run["dir"] / "figures" / "confidence.svg").is_file()
    report = next(c for c in commands() if c[2] == "emotion_lab.report")
    from emotion_lab.report import main

    with caplog.at_level(logging.WARNING):
        assert main([arg.replace("$RUN", str(run["dir"])) for arg in report[3:]]) == 0
    text = (run["dir"] / "report.md").read_text()
    assert re.search(r"!\[[^\]]*\]\(figures/confidence\.png\)", text), text
