"""A model folder or checkpoint is data: it may only build an emotion_lab network (or one the user trusts)."""

import json
import sys

import pytest
import torch

from emotion_lab.encoders.loading import load_tokenizer
from emotion_lab.errors import ModelLoadError
from emotion_lab.inference import EmotionPredictor
from emotion_lab.models.loading import build_network
from emotion_lab.models.networks import EncoderLinearNet
from emotion_lab.predict import main as predict


@pytest.fixture
def model_folder(tmp_path, tiny_encoder):
    """A genuine model folder (random tiny weights), written as export writes one."""
    torch.manual_seed(0)
    net = EncoderLinearNet(tiny_encoder)
    return EmotionPredictor(net, load_tokenizer(tiny_encoder)).save_pretrained(tmp_path / "model")


def with_net(folder, net_config):
    config = json.loads((folder / "emotion_lab.json").read_text())
    config["net"] = net_config
    (folder / "emotion_lab.json").write_text(json.dumps(config))
    return folder


def test_a_folder_naming_torch_hub_load_runs_no_code(model_folder, tmp_path, capsys):
    hub = tmp_path / "hub"
    hub.mkdir()
    marker = tmp_path / "hubconf-ran"
    (hub / "hubconf.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\ndef model(**kw):\n    return None\n")
    with_net(model_folder, {"_target_": "torch.hub.load", "repo_or_dir": str(hub), "model": "model", "source": "local"})
    assert predict([str(model_folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert "net._target_='torch.hub.load': refused" in err and len(err.splitlines()) == 1
    assert not marker.exists()


@pytest.mark.parametrize(
    "target, arguments",
    [
        ("os.system", {"command": "touch {marker}"}),
        ("subprocess.run", {"args": ["touch", "{marker}"]}),
        ("builtins.exec", {"source": "open({marker!r}, 'w')"}),
    ],
)
def test_functions_that_run_commands_are_refused(model_folder, tmp_path, target, arguments):
    marker = str(tmp_path / "ran")
    arguments = json.loads(json.dumps(arguments).replace("{marker}", marker).replace("{marker!r}", repr(marker)))
    with_net(model_folder, {"_target_": target, **arguments})
    with pytest.raises(ModelLoadError, match="refused, a model file may only build emotion_lab networks"):
        EmotionPredictor.from_pretrained(model_folder)
    assert not (tmp_path / "ran").exists()


def test_an_unknown_module_is_never_imported(model_folder, tmp_path, monkeypatch):
    (tmp_path / "side_effects.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w')\nclass Net: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with_net(model_folder, {"_target_": "side_effects.Net"})
    with pytest.raises(ModelLoadError, match="refused"):
        EmotionPredictor.from_pretrained(model_folder)
    assert "side_effects" not in sys.modules and not (tmp_path / "imported").exists()


def test_an_emotion_lab_callable_that_is_not_a_network_is_refused():
    with pytest.raises(ModelLoadError, match="not a subclass of EmotionNet"):
        build_network({"_target_": "emotion_lab.utils.runtime.run_task", "task": None, "cfg": None})


def test_a_users_own_network_loads_when_its_module_is_trusted(tmp_path, tiny_encoder, monkeypatch):
    (tmp_path / "my_nets.py").write_text(
        "from emotion_lab.models.networks import EncoderLinearNet\n\n"
        "class WideDropoutNet(EncoderLinearNet):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from my_nets import WideDropoutNet

    torch.manual_seed(0)
    net = WideDropoutNet(tiny_encoder, dropout=0.5).eval()
    folder = EmotionPredictor(net, load_tokenizer(tiny_encoder)).save_pretrained(tmp_path / "model")
    with pytest.raises(ModelLoadError, match=r"--trust-module my_nets"):
        EmotionPredictor.from_pretrained(folder)
    loaded = EmotionPredictor.from_pretrained(folder, trusted_modules=["my_nets"])
    assert type(loaded.net).__name__ == "WideDropoutNet"
    ids = torch.tensor([[101, 2000, 102]])
    with torch.no_grad():
        assert torch.allclose(loaded.net(ids, torch.ones_like(ids)), net(ids, torch.ones_like(ids)), atol=1e-6)
    (tmp_path / "in.txt").write_text("i feel fine\n")
    out = tmp_path / "out.csv"
    assert (
        predict([str(folder), "--trust-module", "my_nets", "--input", str(tmp_path / "in.txt"), "--output", str(out)])
        == 0
    )
    assert len(out.read_text().splitlines()) == 2


@pytest.mark.parametrize("value", ["hot", 0, -1.5, True, None])
def test_a_bad_temperature_is_one_line(model_folder, value):
    config = json.loads((model_folder / "emotion_lab.json").read_text())
    config["temperature"] = value
    (model_folder / "emotion_lab.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"emotion_lab.json: temperature .* is not a positive number"):
        EmotionPredictor.from_pretrained(model_folder)


def test_a_folder_from_before_calibration_loads_with_temperature_one(model_folder):
    config = json.loads((model_folder / "emotion_lab.json").read_text())
    assert config.pop("temperature") == 1.0  # an untrained network was never calibrated
    (model_folder / "emotion_lab.json").write_text(json.dumps(config))
    assert EmotionPredictor.from_pretrained(model_folder).temperature == 1.0
