import csv
import io
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from emotion_lab.inference.export import export
from emotion_lab.inference.predictor import EmotionPredictor, ModelLoadError
from emotion_lab.inference.text_files import CSV_FIELD_LIMIT, TextFileError
from emotion_lab.labels import LABELS
from emotion_lab.models.checkpoints import load_classifier
from emotion_lab.predict import batch, interactive, main
from emotion_lab.utils.config import PROJECT_ROOT


@pytest.fixture(scope="module")
def predictor(trained):
    return EmotionPredictor.from_pretrained(trained["out"] / "model")


def test_export_round_trip_gives_the_checkpoints_logits(trained, tmp_path):
    folder = export(trained["ckpt"], tmp_path / "model")
    assert {"model.safetensors", "emotion_lab.json", "README.md", "tokenizer.json"} <= {
        p.name for p in folder.iterdir()
    }
    assert "test/f1_weighted" in (folder / "README.md").read_text()
    loaded = EmotionPredictor.from_pretrained(folder)
    reference = load_classifier(trained["ckpt"])
    texts = ["i feel happy today", "i am so scared of the dark and the noises outside", "wow"]
    batch = loaded.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = reference(batch["input_ids"], batch["attention_mask"])
        got = loaded.net(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(got, expected, atol=1e-5)
    # predict() sorts by length internally and hands results back in input order, its probabilities
    # scaled by the temperature fitted on validation (stored in the checkpoint, then in the folder).
    temperature = json.loads((folder / "emotion_lab.json").read_text())["temperature"]
    assert temperature == reference.calibration_temperature != 1.0 and loaded.temperature == temperature
    probs = torch.tensor([[p.probs[label] for label in loaded.labels] for p in loaded.predict(texts, batch_size=2)])
    assert torch.allclose(probs, (expected / temperature).softmax(-1), atol=1e-5)
    assert EmotionPredictor.from_checkpoint(trained["ckpt"]).temperature == temperature


def test_the_model_reads_text_through_its_training_spelling(trained, predictor, tmp_path):
    folder = trained["out"] / "model"
    assert json.loads((folder / "emotion_lab.json").read_text())["spelling"] == "words.tsv"
    assert "happy\t" in (folder / "words.tsv").read_text()  # a word of the synthetic training split
    typo, plain = ["i feel hapy today"], ["i feel happy today"]
    as_written = EmotionPredictor.from_pretrained(folder, spelling=False)
    exported = EmotionPredictor.from_pretrained(export(trained["ckpt"], tmp_path / "model"))
    for model in (predictor, EmotionPredictor.from_checkpoint(trained["ckpt"]), exported):
        assert model.read(typo) == plain
        assert model.predict(typo)[0].probs == pytest.approx(model.predict(plain)[0].probs, abs=1e-6)
    assert predictor.word_attention(typo)[0].words == ["i", "feel", "happy", "today"]
    assert [w.text for w in predictor.explain(typo, steps=4)[0].words] == ["i", "feel", "happy", "today"]
    assert as_written.read(typo) == typo
    assert as_written.predict(typo)[0].probs != pytest.approx(as_written.predict(plain)[0].probs, abs=1e-6)


def test_training_exports_its_best_model(trained, predictor):
    card = (trained["out"] / "model" / "README.md").read_text()
    assert f"{trained['metrics']['test/f1_weighted']:.4f}" in card
    prediction = predictor("I feel so happy today!")
    assert prediction.label in predictor.labels
    assert sum(prediction.probs.values()) == pytest.approx(1.0, abs=1e-5)


def test_checkpoint_and_folder_predict_alike(trained, predictor):
    from_ckpt = EmotionPredictor.from_checkpoint(trained["ckpt"])
    a, b = from_ckpt("i am furious"), predictor("i am furious")
    assert a.label == b.label and a.probs == pytest.approx(b.probs, abs=1e-5)


def test_loop_shows_what_the_spelling_step_read(predictor):
    out = io.StringIO()
    interactive(predictor, stdin=io.StringIO("i feel hapy\ni feel happy\n"), stdout=out)
    assert out.getvalue().count("read as:") == 1 and "  read as: i feel happy" in out.getvalue()


def test_loop_answers_each_line_and_stops_at_exit(predictor):
    out = io.StringIO()
    answered = interactive(
        predictor, stdin=io.StringIO("i feel happy\n\n   \ni am sad\nexit\nnever read\n"), stdout=out
    )
    lines = out.getvalue().splitlines()
    assert answered == 2
    assert lines[0].startswith("emotion_lab ready")
    assert sum("empty line" in line for line in lines) == 2
    answers = [line for line in lines if line.split("\t")[0] in predictor.labels]
    assert len(answers) == 2 and all("sadness=" in a for a in answers)


def test_loop_ends_cleanly_at_eof_and_survives_odd_input(predictor):
    text = ("i feel happy " * 8000)[:100_000] + "\n" + "i feel 😊 très bien \x07\x1b[31m 我很高兴\nquit"
    out = io.StringIO()
    assert interactive(predictor, stdin=io.StringIO(text), stdout=out) == 2
    assert "truncated to" in out.getvalue()
    assert interactive(predictor, stdin=io.StringIO("i feel fine"), stdout=io.StringIO()) == 1


def test_loop_explains_each_answer_with_its_words_when_asked(predictor, trained, capsys):
    out = io.StringIO()
    assert interactive(predictor, stdin=io.StringIO("i feel happy today\n"), stdout=out, explain=True) == 1
    words = [line for line in out.getvalue().splitlines() if line.startswith("  words (integrated gradients")]
    expected = predictor.explain(["i feel happy today"])[0]
    assert words == ["  words (integrated gradients, toward " + expected.label + "): "
                     + " ".join(f"{w.text} {w.score:+.2f}" for w in expected.words)]  # fmt: skip
    # Explanations are for the loop; a batch run with --explain is one line, before the model loads.
    with pytest.raises(SystemExit) as exit_:
        main([str(trained["out"] / "model"), "--explain", "--input", "x.txt"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith("--explain: the interactive loop only (no --input or --format)")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_batch_outputs_one_row_per_input_line(trained, tmp_path, fmt, capsys):
    source = tmp_path / "in.txt"
    source.write_bytes(
        "i feel happy\n\ni am scared \xff of it\n".encode("utf-8", "surrogateescape").replace(b"\xc3\xbf", b"\xff")
        + b"wow\n"
    )
    output = tmp_path / f"out.{fmt}"
    assert main([str(trained["out"] / "model"), "--input", str(source), "--output", str(output)]) == 0
    if fmt == "csv":
        rows = list(csv.DictReader(output.open()))
        assert [r["text"] for r in rows][:2] == ["i feel happy", ""]
        assert rows[1]["label"] == "" and rows[0]["label"] in {"sadness", "joy", "love", "anger", "fear", "surprise"}
        assert float(rows[0]["p_joy"]) >= 0 and set(rows[0]) >= {"p_sadness", "p_surprise"}
    else:
        rows = [json.loads(line) for line in output.read_text().splitlines()]
        assert rows[1]["label"] is None and abs(sum(rows[0]["probs"].values()) - 1) < 1e-4
    assert len(rows) == 4 and "\ufffd" in rows[2]["text"]  # invalid UTF-8 replaced, not fatal


def test_batch_reads_csv_and_jsonl_text_columns(trained, tmp_path):
    model = str(trained["out"] / "model")
    (tmp_path / "in.csv").write_text('id,sentence\n1,"i feel happy, really"\n2,i am sad\n')
    (tmp_path / "in.jsonl").write_text('{"sentence": "i feel happy"}\n{"sentence": "i am sad"}\n')
    for name in ("in.csv", "in.jsonl"):
        out = tmp_path / f"{name}.out.jsonl"
        assert main([model, "--input", str(tmp_path / name), "--text-column", "sentence", "--output", str(out)]) == 0
        assert [json.loads(line)["text"] for line in out.read_text().splitlines()] == [
            "i feel happy, really" if name == "in.csv" else "i feel happy",
            "i am sad",
        ]


def test_bad_inputs_and_models_are_one_line_errors(trained, tmp_path, capsys):
    model = str(trained["out"] / "model")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{not json\n')
    assert main([model, "--input", str(tmp_path / "bad.jsonl"), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "bad.jsonl:2: not valid JSON" in capsys.readouterr().err
    assert main([model, "--input", str(tmp_path / "missing.txt")]) == 2
    assert main([str(tmp_path / "no-model")]) == 2
    assert "no-model: not an emotion_lab model" in capsys.readouterr().err
    # A valid folder whose weights file alone is damaged: the weights are read, and refused by name.
    damaged = shutil.copytree(trained["out"] / "model", tmp_path / "damaged")
    (damaged / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match=r"damaged/model.safetensors: not a readable safetensors file"):
        EmotionPredictor.from_pretrained(damaged)
    (tmp_path / "x.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="x.ckpt"):
        EmotionPredictor.from_pretrained(tmp_path / "x.ckpt")


def test_an_output_that_is_the_input_is_refused_and_the_input_kept(trained, tmp_path, capsys):
    model = str(trained["out"] / "model")
    source = tmp_path / "in.txt"
    source.write_bytes(b"i feel happy\ni am sad\n")
    (tmp_path / "link.txt").symlink_to(source)
    os.link(source, tmp_path / "hard.txt")
    (tmp_path / "sub").mkdir()
    for output in (source, tmp_path / "link.txt", tmp_path / "hard.txt", tmp_path / "sub" / ".." / "in.txt"):
        assert main([model, "--input", str(source), "--output", str(output)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--output {output} is the --input file" in err
        assert source.read_bytes() == b"i feel happy\ni am sad\n"
    assert main([model, "--input", str(source), "--output", str(tmp_path / "sub")]) == 2
    assert "sub: a folder; name a file" in capsys.readouterr().err
    # Through the link the other way round: the output file is kept and the input read.
    assert main([model, "--input", str(tmp_path / "link.txt"), "--output", str(tmp_path / "out.csv")]) == 0
    assert len(list(csv.DictReader((tmp_path / "out.csv").open()))) == 2


def test_an_output_that_cannot_be_replaced_is_streamed_or_one_line(trained, tmp_path, capsys):
    model = str(trained["out"] / "model")
    source = tmp_path / "in.txt"
    source.write_text("i feel happy\n")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE, text=True)
    assert main([model, "--input", str(source), "--output", str(fifo), "--format", "csv"]) == 0
    assert reader.communicate(timeout=30)[0].splitlines()[0].startswith("text,label")
    capsys.readouterr()
    (tmp_path / "file").write_text("")
    assert main([model, "--input", str(source), "--output", str(tmp_path / "file" / "out.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out.csv: cannot be written" in err


def test_a_csv_field_longer_than_pythons_default_limit_predicts(trained, tmp_path, capsys):
    model = str(trained["out"] / "model")
    long = ("i feel happy " * 20_000)[:200_000]  # over csv's default field_size_limit (131,072)
    source = tmp_path / "in.csv"
    source.write_text(f'id,text\n1,"{long}"\n2,i am sad\n')
    assert main([model, "--input", str(source), "--output", str(tmp_path / "out.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [len(r["text"]) for r in rows] == [200_000, 8] and all(r["label"] in LABELS for r in rows)
    capsys.readouterr()
    # Past emotion_lab's own bound: one line naming the file, line and row.
    source.write_text(f"id,text\n1,ok\n2,{'a' * (CSV_FIELD_LIMIT + 1)}\n")
    assert main([model, "--input", str(source), "--output", str(tmp_path / "out.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "in.csv:3: row 3 (the header is row 1) is not valid CSV (field larger" in err


@pytest.mark.parametrize(
    "bad_row, line, reason",
    [('3,"i am" sad', 4, "',' expected after '\"'"), ('3,"i am sad\n4,wow', 5, "unexpected end of data")],
)
def test_a_malformed_csv_row_is_one_line_and_the_old_output_stays(trained, tmp_path, capsys, bad_row, line, reason):
    source = tmp_path / "in.csv"
    source.write_text(f"id,text\n1,i feel happy\n2,i am scared\n{bad_row}\n")
    output = tmp_path / "out.csv"
    output.write_bytes(b"the previous run's predictions\n")
    assert main([str(trained["out"] / "model"), "--input", str(source), "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"in.csv:{line}: row 4 (the header is row 1) is not valid CSV ({reason})" in err
    assert output.read_bytes() == b"the previous run's predictions\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv"]  # no temporary file left


def test_an_error_after_rows_were_written_keeps_the_old_output(predictor, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text('text\ni feel happy\ni am sad\nwow\n"unclosed\n')
    output = tmp_path / "out.csv"
    output.write_text("old\n")
    # chunk_size=2: two chunks are predicted and written to the temporary file before row 5 fails.
    with pytest.raises(TextFileError, match="row 5"):
        batch(predictor, str(source), str(output), None, chunk_size=2)
    assert output.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv"]


@pytest.mark.slow
def test_cli_loop_through_a_pipe(trained):
    result = subprocess.run(
        [sys.executable, "-m", "emotion_lab.predict", str(trained["out"] / "model")],
        input="i feel happy\nexit\n",
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("emotion_lab ready") and len(lines) == 2 and "\t" in lines[1]


@pytest.mark.parametrize("lstm_impl", ["padded", "packed"])
def test_quantize_runs_end_to_end_for_every_lstm_implementation(trained, tmp_path, lstm_impl):
    folder = shutil.copytree(trained["out"] / "model", tmp_path / "model")
    config = json.loads((folder / "emotion_lab.json").read_text())
    assert config["net"]["lstm_impl"] == "padded"  # the default the training run used
    config["net"]["lstm_impl"] = lstm_impl
    (folder / "emotion_lab.json").write_text(json.dumps(config))
    source = tmp_path / "in.txt"
    source.write_text("i feel happy\ni am so scared of the dark tonight\nwow\n")
    for flags, out in (([], "fp32.jsonl"), (["--quantize", "--backend", "torch"], "int8.jsonl")):
        assert main([str(folder), "--input", str(source), "--output", str(tmp_path / out), *flags]) == 0
    fp32, int8 = (
        [json.loads(line) for line in (tmp_path / f).read_text().splitlines()] for f in ("fp32.jsonl", "int8.jsonl")
    )
    assert len(int8) == 3
    for exact, quantized in zip(fp32, int8):
        assert quantized["probs"] == pytest.approx(exact["probs"], abs=0.05)
    quantized = EmotionPredictor.from_pretrained(folder, backend="torch", int8=True)
    assert quantized.backend.name == "torch int8"
    assert type(quantized.net.lstm).__module__.startswith("torch.ao.nn.quantized")
