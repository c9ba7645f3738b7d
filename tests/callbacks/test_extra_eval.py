"""`data.extra_eval`: evaluation-only sets are scored after the test, with the test's weights, by training and
by evaluate; a file that is not there is one line naming the option."""

from __future__ import annotations

import json

import pytest
from omegaconf import open_dict

from emotion_lab.data.sources import DataSourceError
from emotion_lab.evaluate import evaluate
from emotion_lab.labels import LABELS
from emotion_lab.train import train
from tests.conftest import QUIET, compose_config, tiny_overrides


@pytest.fixture(scope="module")
def run_with_extra(tmp_path_factory, data_dir, tiny_encoder):
    out = tmp_path_factory.mktemp("extra")
    overrides = [*tiny_overrides(tiny_encoder, data_dir), "trainer.max_epochs=1", "trainer.num_sanity_val_steps=0",
                 "export=false", *QUIET, f"+data.extra_eval.same_as_test={data_dir / 'test.txt'}",
                 f"+data.extra_eval.val={data_dir / 'val.txt'}"]  # fmt: skip
    metrics, objects = train(compose_config("train", overrides, out))
    return metrics, objects, out


def test_a_set_equal_to_the_test_split_scores_as_the_test(run_with_extra):
    metrics, _, out = run_with_extra
    assert metrics["extra/same_as_test/f1_weighted"] == pytest.approx(metrics["test/f1_weighted"], abs=1e-6)
    assert metrics["extra/same_as_test/f1_macro"] == pytest.approx(metrics["test/f1_macro"], abs=1e-6)
    for label in LABELS:
        assert metrics[f"extra/same_as_test/recall_{label}"] == pytest.approx(metrics[f"test_recall/{label}"], abs=1e-6)
    saved = json.loads((out / "metrics.json").read_text())
    assert {"extra/val/f1_weighted", "extra/val/f1_macro"} <= set(saved)


def test_evaluate_scores_them_too(run_with_extra, tmp_path, data_dir):
    metrics, objects, _ = run_with_extra
    ckpt = objects["trainer"].checkpoint_callback.best_model_path
    cfg = compose_config("evaluate", [f"ckpt_path={ckpt}", f"data.dir={data_dir}", "trainer.enable_progress_bar=false",
                                      f"+data.extra_eval.val={data_dir / 'val.txt'}"], tmp_path)  # fmt: skip
    evaluated, _ = evaluate(cfg)
    assert evaluated["extra/val/f1_weighted"] == pytest.approx(metrics["extra/val/f1_weighted"], abs=1e-6)


def test_a_missing_file_is_one_line_naming_the_option(tiny_train_cfg, tmp_path):
    with open_dict(tiny_train_cfg):
        tiny_train_cfg.data.extra_eval = {"reddit": str(tmp_path / "nope.txt")}
    with pytest.raises(DataSourceError, match=r"data.extra_eval.reddit='.*nope.txt': no such file"):
        train(tiny_train_cfg)
