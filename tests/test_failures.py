"""Bad models and bad data through the commands: exit status 2 and one line naming what is wrong."""

import json
import shutil

import pytest
import torch

from emotion_lab.evaluate import evaluate
from emotion_lab.export import main as export_main
from emotion_lab.predict import main as predict
from emotion_lab.train import train
from emotion_lab.utils.runtime import run_task
from tests.conftest import QUIET, compose_config, write_split_files


def one_line_exit_2(call, caplog) -> str:
    """Run a command's task as its entry point does; return the one line it logged."""
    caplog.clear()
    with pytest.raises(SystemExit) as exit_info:
        call()
    assert exit_info.value.code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    return errors[0]


def evaluate_cmd(ckpt, data_dir, tmp_path):
    cfg = compose_config(
        "evaluate", [f"ckpt_path={ckpt}", f"data.dir={data_dir}", "trainer.enable_progress_bar=false"], tmp_path
    )
    return lambda: run_task(evaluate, cfg)


def export_cmd(ckpt, tmp_path):
    return lambda: export_main.__wrapped__(
        compose_config("export", [f"ckpt_path={ckpt}", f"out={tmp_path / 'x'}"], tmp_path)
    )


def bad_checkpoints(trained, tmp_path):
    truncated = tmp_path / "truncated.ckpt"
    data = trained["ckpt"].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    foreign = tmp_path / "foreign.ckpt"
    torch.save(
        {"state_dict": {"layer.weight": torch.zeros(2, 2)}, "hyper_parameters": {"lr": 0.1}, "epoch": 3}, foreign
    )
    reshaped = tmp_path / "reshaped.ckpt"
    checkpoint = torch.load(trained["ckpt"], weights_only=True)
    checkpoint["hyper_parameters"]["net"]["lstm_hidden"] = 32
    torch.save(checkpoint, reshaped)
    relabelled = tmp_path / "relabelled.ckpt"
    checkpoint = torch.load(trained["ckpt"], weights_only=True)
    checkpoint["id2label"] = {**checkpoint["id2label"], 1: "happiness"}
    torch.save(checkpoint, relabelled)
    return {
        relabelled: "differ from emotion_lab's",
        truncated: "truncated.ckpt: not a readable emotion_lab checkpoint",
        foreign: "without an emotion_lab network config",
        reshaped: "weights do not fit",
    }


def test_bad_checkpoints_through_predict_evaluate_and_export(trained, data_dir, tmp_path, caplog, capsys):
    for ckpt, message in bad_checkpoints(trained, tmp_path).items():
        assert predict([str(ckpt)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert message in one_line_exit_2(evaluate_cmd(ckpt, data_dir, tmp_path / "eval"), caplog)
        assert message in one_line_exit_2(export_cmd(ckpt, tmp_path / "export"), caplog)


def edited_folder(trained, tmp_path, name, edit):
    folder = shutil.copytree(trained["model"], tmp_path / name)
    config = json.loads((folder / "emotion_lab.json").read_text())
    edit(folder, config)
    (folder / "emotion_lab.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    "name, edit, message",
    [
        (
            "corrupt",
            lambda f, c: (f / "model.safetensors").write_bytes(b"\x00" * 64),
            "model.safetensors: not a readable",
        ),
        ("newer", lambda f, c: c.update(format_version=2), "format_version 2, this emotion_lab reads 1"),
        ("reshaped", lambda f, c: c["net"].update(lstm_hidden=32), "weights do not fit the network"),
        ("relabelled", lambda f, c: c.update(labels=["sad", "happy", "love", "anger", "fear", "surprise"]), "labels"),
    ],
)
def test_bad_model_folders_through_predict(trained, tmp_path, capsys, name, edit, message):
    folder = edited_folder(trained, tmp_path, name, edit)
    assert predict([str(folder), "--input", "-"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def train_cmd(data_dir, tiny_encoder, tmp_path, *extra):
    cfg = compose_config(
        "train",
        [f"model.net.encoder_name={tiny_encoder}", "model.net.lstm_hidden=8", f"data.dir={data_dir}", *QUIET, *extra],
        tmp_path / "run",
    )
    return lambda: run_task(train, cfg)


@pytest.mark.parametrize(
    "break_data, message",
    [
        (lambda d: (d / "train.txt").write_text(""), "train.txt: no usable lines"),
        (lambda d: (d / "val.txt").unlink(), "missing val.txt"),
        (
            lambda d: [(d / n).unlink() for n in ("train.txt", "val.txt", "test.txt")],
            "missing train.txt, val.txt, test.txt",
        ),
        (lambda d: (d / "test.txt").write_text("i feel odd;bored\n"), "test.txt:1: unknown label 'bored'"),
    ],
)
def test_bad_data_through_train(tmp_path, tiny_encoder, caplog, break_data, message):
    data = write_split_files(tmp_path / "data")
    break_data(data)
    assert message in one_line_exit_2(train_cmd(data, tiny_encoder, tmp_path), caplog)


def test_a_bom_and_crlf_lines_load(tmp_path, tiny_encoder):
    data = write_split_files(tmp_path / "data")
    for name in ("train.txt", "val.txt", "test.txt"):
        lines = (data / name).read_text().splitlines()
        (data / name).write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    metrics, objects = train_cmd(data, tiny_encoder, tmp_path, "trainer.fast_dev_run=true")()
    first = objects["datamodule"].datasets["train"].with_format(None)["text"][0]
    assert first == (tmp_path / "data" / "train.txt").read_text(encoding="utf-8-sig").splitlines()[0].rpartition(";")[0]
    assert "test/f1_weighted" in metrics


def hub_that_leaves_a_marker(tmp_path):
    hub = tmp_path / "hub"
    hub.mkdir(exist_ok=True)
    marker = tmp_path / "hubconf-ran"
    (hub / "hubconf.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\ndef model(**kw):\n    return None\n")
    return {"_target_": "torch.hub.load", "repo_or_dir": str(hub), "model": "model", "source": "local"}, marker


def test_a_checkpoint_naming_code_as_its_network_is_refused_by_every_command(trained, data_dir, tmp_path, caplog):
    call, marker = hub_that_leaves_a_marker(tmp_path)
    checkpoint = torch.load(trained["ckpt"], weights_only=True)
    checkpoint["hyper_parameters"]["net"] = call
    crafted = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, crafted)
    assert predict([str(crafted)]) == 2
    assert "refused" in one_line_exit_2(evaluate_cmd(crafted, data_dir, tmp_path / "eval"), caplog)
    assert "refused" in one_line_exit_2(export_cmd(crafted, tmp_path / "export"), caplog)
    assert not marker.exists()


@pytest.mark.parametrize("how", ["attribute path", "nested target"])
def test_a_checkpoint_naming_code_as_its_loss_runs_none(trained, data_dir, tmp_path, how):
    call, marker = hub_that_leaves_a_marker(tmp_path)
    checkpoint = torch.load(trained["ckpt"], weights_only=True)
    if how == "attribute path":
        loss = {**call, "_target_": "emotion_lab.models.losses.torch.hub.load"}
    else:
        loss = {"_target_": "emotion_lab.models.losses.FocalLoss", "_partial_": True, "gamma": 2.0, "alpha": call}
    checkpoint["hyper_parameters"]["loss"] = loss
    crafted = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, crafted)
    metrics = evaluate_cmd(crafted, data_dir, tmp_path / "eval")()[0]  # evaluates, reporting cross-entropy
    assert "test/f1_weighted" in metrics and not marker.exists()


def test_checkpoints_from_before_losses_had_a_target_still_load():
    from emotion_lab.models.checkpoints import checkpoint_loss
    from emotion_lab.models.losses import CrossEntropyLoss, FocalLoss

    ce = checkpoint_loss({"name": "ce", "gamma": 0.0, "alpha": "none", "label_smoothing": 0.1, "rdrop": 0.0})()
    focal = checkpoint_loss({"name": "focal", "gamma": 1.5, "alpha": "none", "label_smoothing": 0.0})()
    assert type(ce) is CrossEntropyLoss and ce.label_smoothing == 0.1 and ce.gamma == 0.0
    assert type(focal) is FocalLoss and focal.gamma == 1.5 and focal.alpha is None
