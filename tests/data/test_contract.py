"""The DataModule contract: what the LightningModule and callbacks read is declared, and checked at the start."""

import lightning as L
import pytest
from omegaconf import open_dict

from emotion_lab.data.contract import CONTRACT, EmotionData, check_datamodule, missing_members
from emotion_lab.data.datamodule import EmotionDataModule
from emotion_lab.errors import ConfigError
from emotion_lab.train import train


class LoadersOnly(L.LightningDataModule):
    """A user's DataModule that knows nothing of emotion_lab."""

    def __init__(self, **_: object) -> None:
        super().__init__()


def test_the_contract_names_every_member_of_the_protocol():
    declared = {name for name in vars(EmotionData) if not name.startswith("_")} | set(EmotionData.__annotations__)
    assert declared == set(CONTRACT)


def test_the_project_datamodule_meets_it_before_setup(tiny_encoder):
    assert missing_members(EmotionDataModule(tiny_encoder)) == []


def test_a_datamodule_missing_members_gets_one_line_naming_them():
    with pytest.raises(ConfigError) as err:
        check_datamodule(LoadersOnly())
    message = str(err.value)
    assert "\n" not in message and "LoadersOnly lacks source, tokenizer, max_length" in message


def test_training_with_such_a_datamodule_stops_before_anything_is_built(tiny_train_cfg):
    cfg = tiny_train_cfg
    with open_dict(cfg):
        cfg.data = {"_target_": f"{__name__}.LoadersOnly"}
    with pytest.raises(ConfigError, match="LoadersOnly lacks .*eval_examples"):
        train(cfg)
