"""A model file cannot make loading run its code, allocate beyond its weights, or download anything."""

import io
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emotion_lab.encoders import loading as encoder_module
from emotion_lab.encoders.embedded import EmbeddedEncoderError
from emotion_lab.encoders.loading import RemoteCodeRefusedError, load_tokenizer
from emotion_lab.errors import ModelLoadError, UserInputError
from emotion_lab.inference import EmotionPredictor
from emotion_lab.models.networks import BiLSTMAttentionNet
from emotion_lab.predict import main as predict

# Python a hostile model file ships: importing it writes a marker file.
CODE = (
    "open({marker!r}, 'w').write('ran')\n"
    "from transformers import BertConfig, BertModel\nEvilConfig, EvilModel = BertConfig, BertModel\n"
)
AUTO_MAP = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel", "AutoTokenizer": ["evil.EvilTok", None]}


@pytest.fixture
def folder(tmp_path, tiny_model):
    copy = tmp_path / "model"
    shutil.copytree(tiny_model, copy)
    return copy


@pytest.fixture
def answers_yes(monkeypatch):
    """Standard input that says yes to any prompt, as piped data whose first line is `y` would."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 20))


def plant_code(folder: Path, file: str, marker: Path, **config_changes) -> None:
    config = json.loads((folder / file).read_text())
    (folder / file).write_text(json.dumps({**config, **config_changes, "auto_map": AUTO_MAP}))
    (folder / "evil.py").write_text(CODE.format(marker=str(marker)))


@pytest.mark.parametrize("where, file", [("encoder", "config.json"), (".", "tokenizer_config.json")])
def test_a_folder_whose_config_names_code_is_refused_in_one_line(folder, tmp_path, answers_yes, capsys, where, file):
    marker = tmp_path / "ran"
    plant_code(folder / where, file, marker, **({"model_type": "evil"} if file == "config.json" else {}))
    assert predict([str(folder), "--input", "-"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "names code (auto_map); emotion_lab never runs code from a model file" in err
    assert not marker.exists()


def test_piped_data_cannot_answer_a_prompt_to_run_code(folder, tmp_path):
    """The command as a user runs it: texts piped in, the first one `y`."""
    marker = tmp_path / "ran"
    plant_code(folder / "encoder", "config.json", marker, model_type="evil")
    run = subprocess.run(
        [sys.executable, "-m", "emotion_lab.predict", str(folder), "--input", "-"],
        input="y\ni feel fine\n",
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert run.returncode == 2, run.stderr
    assert "names code (auto_map)" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not marker.exists()


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, tiny_encoder):
    """A hub cache holding `evil/encoder`, whose config names code: what a downloaded repository looks like."""
    snapshot = tmp_path / "hub" / "models--evil--encoder" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_encoder, snapshot)
    (tmp_path / "hub" / "models--evil--encoder" / "refs").mkdir()
    (tmp_path / "hub" / "models--evil--encoder" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("transformers.utils.hub.TRANSFORMERS_CACHE", str(tmp_path / "hub"), raising=False)
    return snapshot


def tiny_checkpoint(path: Path, tiny_encoder: str, encoder_name: str, **net_changes) -> Path:
    torch.manual_seed(0)
    net = BiLSTMAttentionNet(tiny_encoder, lstm_hidden=16)
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save(
        {"hyper_parameters": {"net": {**net.config, "encoder_name": encoder_name, **net_changes}}, "state_dict": state},
        path,
    )
    return path


def test_a_checkpoint_naming_a_hub_repository_with_code_is_refused(hub_cache, tmp_path, tiny_encoder, answers_yes):
    marker = tmp_path / "ran"
    plant_code(hub_cache, "config.json", marker, model_type="evil")
    ckpt = tiny_checkpoint(tmp_path / "x.ckpt", tiny_encoder, "evil/encoder")
    for allow_download in (False, True):  # from the cache alone, and as transformers resolves it
        with pytest.raises(RemoteCodeRefusedError, match="names code"):
            EmotionPredictor.from_pretrained(ckpt, allow_download=allow_download)
    assert not marker.exists()


def test_serve_refuses_a_folder_naming_code_before_listening(folder, tmp_path, answers_yes, capsys, monkeypatch):
    from emotion_lab.serve import main as serve

    monkeypatch.setattr("uvicorn.run", lambda *args, **kwargs: pytest.fail("the server started"))
    marker = tmp_path / "ran"
    plant_code(folder / "encoder", "config.json", marker, model_type="evil")
    assert serve([str(folder)]) == 2
    assert "names code (auto_map)" in capsys.readouterr().err
    assert not marker.exists()


def test_the_inference_benchmark_refuses_a_folder_naming_code(folder, tmp_path, answers_yes):
    from emotion_lab.tools.bench_inference import bench_pipeline

    marker = tmp_path / "ran"
    plant_code(folder, "tokenizer_config.json", marker)
    with pytest.raises(RemoteCodeRefusedError):
        bench_pipeline(folder, ["i feel fine"], latency_n=1, batch_size=1)
    assert not marker.exists()


@pytest.fixture
def no_network(monkeypatch):
    """Any name lookup or connection attempt is recorded and fails."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network refused by the test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    return attempts


def test_a_checkpoint_never_downloads_the_encoder_it_names_unless_allowed(tmp_path, tiny_encoder, no_network):
    ckpt = tiny_checkpoint(tmp_path / "x.ckpt", tiny_encoder, "someone/big-encoder")
    with pytest.raises(UserInputError, match="never downloaded unless you allow it"):
        EmotionPredictor.from_pretrained(ckpt)
    assert no_network == []


def test_allow_download_lets_the_hub_be_asked(tmp_path, tiny_encoder, monkeypatch):
    asked = []

    def hub(name, **kwargs):
        asked.append((name, kwargs["local_files_only"], kwargs["trust_remote_code"]))
        raise OSError("not reachable in the test")

    ckpt = tiny_checkpoint(tmp_path / "x.ckpt", tiny_encoder, "someone/big-encoder")
    monkeypatch.setattr("emotion_lab.encoders.loading.AutoConfig.from_pretrained", hub)
    with pytest.raises(UserInputError, match="cannot load its config"):
        EmotionPredictor.from_pretrained(ckpt, allow_download=True)
    assert asked == [("someone/big-encoder", False, False)]


def test_a_model_folder_loads_without_reaching_a_network(tiny_model, no_network):
    assert EmotionPredictor.from_pretrained(tiny_model).predict(["i feel fine"])[0].label
    assert no_network == []


def run_limited(code: str, limit_gib: float = 3.0) -> subprocess.CompletedProcess:
    """Python under an address-space limit: an allocation the weights do not justify fails loudly."""
    limit = int(limit_gib * 2**30)
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=180,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


PREDICT = "import sys; from emotion_lab.predict import main; sys.exit(main([{folder!r}, '--input', '-']))"


@pytest.mark.parametrize(
    "file, change",
    [
        ("emotion_lab.json", ("net", "lstm_hidden", 20000)),
        ("encoder/config.json", (None, "intermediate_size", 4_000_000)),
    ],
)
def test_sizes_a_file_declares_are_checked_before_anything_is_allocated(folder, file, change):
    section, key, value = change
    config = json.loads((folder / file).read_text())
    (config[section] if section else config)[key] = value
    (folder / file).write_text(json.dumps(config))
    run = run_limited(PREDICT.format(folder=str(folder)))
    assert run.returncode == 2, run.stderr[-2000:]
    err = run.stderr.strip()
    assert len(err.splitlines()) == 1 and "weights do not fit the network" in err and "nothing was allocated" in err


def test_a_checkpoint_declaring_sizes_its_tensors_lack_is_refused_before_building(tmp_path, tiny_encoder, monkeypatch):
    ckpt = tiny_checkpoint(tmp_path / "x.ckpt", tiny_encoder, tiny_encoder, lstm_hidden=20000)
    built = []
    real_init = torch.nn.LSTM.__init__

    def recording_init(self, *args, **kwargs):
        built.append(torch.empty(0).device.type)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.LSTM, "__init__", recording_init)
    with pytest.raises(ModelLoadError, match="of another shape.*nothing was allocated"):
        EmotionPredictor.from_pretrained(ckpt)
    assert built == ["meta"]  # only the probe on the meta device was built


def test_the_embedded_encoder_is_used_only_with_the_release_weights(tmp_path, monkeypatch):
    package = tmp_path / "fake_minilm"
    (package / "model").mkdir(parents=True)
    marker = tmp_path / "imported"
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w')\n")  # its code must never run
    (package / "model" / "config.json").write_text("{}")
    (package / "model" / "model.safetensors").write_bytes(b"not the release")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(encoder_module, "EMBEDDED_PACKAGE", "fake_minilm")
    with pytest.raises(EmbeddedEncoderError, match="not sentence-transformers/all-MiniLM-L6-v2's release"):
        encoder_module.embedded_encoder_path()
    assert not marker.exists()


def test_the_installed_embedded_encoder_is_the_release():
    path = encoder_module.embedded_encoder_path()
    assert path is not None and load_tokenizer(encoder_module.DEFAULT_ENCODER)("i feel fine")["input_ids"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
NET_KEYS = ["_target_", "encoder_name", "lstm_hidden", "num_heads", "num_classes", "dropout", "pooling", "pretrained"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    field=st.sampled_from(["net", "labels", "max_length", "temperature", "format_version", *NET_KEYS]),
    value=JSON,
)
def test_any_json_in_a_model_folder_loads_or_is_refused_in_one_line(tiny_model, tmp_path_factory, field, value):
    folder = tmp_path_factory.mktemp("fuzzed") / "model"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "emotion_lab.json").read_text())
    if field in NET_KEYS:
        config["net"][field] = value
    else:
        config[field] = value
    (folder / "emotion_lab.json").write_text(json.dumps(config))
    try:
        EmotionPredictor.from_pretrained(folder).predict(["i feel fine"])
    except UserInputError as err:
        assert str(err) and len(str(err).splitlines()) == 1


def test_predict_passes_allow_download_to_the_loader(tmp_path, tiny_encoder, monkeypatch, capsys):
    ckpt = tiny_checkpoint(tmp_path / "x.ckpt", tiny_encoder, "someone/big-encoder")
    assert predict([str(ckpt), "--input", "-"]) == 2
    assert "never downloaded unless you allow it (--allow-download" in capsys.readouterr().err
    asked = []

    def hub(name, **kwargs):
        asked.append(kwargs["local_files_only"])
        raise OSError("not reachable in the test")

    monkeypatch.setattr("emotion_lab.encoders.loading.AutoConfig.from_pretrained", hub)
    assert predict([str(ckpt), "--input", "-", "--allow-download"]) == 2
    assert asked == [False]


def test_evaluate_loads_a_checkpoints_tokenizer_from_local_files_only(
    hub_cache, tmp_path, tiny_encoder, data_dir, no_network
):
    from emotion_lab.evaluate import evaluate
    from tests.conftest import compose_config

    for file in hub_cache.iterdir():  # the hub cache holds the encoder's config, not its tokenizer
        if file.name != "config.json":
            file.unlink()
    ckpt = tiny_checkpoint(tmp_path / "x.ckpt", tiny_encoder, "evil/encoder")
    overrides = [f"ckpt_path={ckpt}", f"data.dir={data_dir}", "trainer.enable_progress_bar=false"]
    cfg = compose_config("evaluate", overrides, tmp_path / "eval")
    with pytest.raises(UserInputError, match="evil/encoder.*tokenizer has no vocabulary"):
        evaluate(cfg)
    assert no_network == []
