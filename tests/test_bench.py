import json

import pytest
from omegaconf import open_dict

from emotion_lab.bench import BenchConfigError, check_validation_only, compose_train, main
from tests.conftest import QUIET


@pytest.mark.slow
def test_quick_bench_writes_every_row(tmp_path, data_dir, tiny_encoder):
    code = main(
        [
            "--quick",
            "--seeds",
            "1",
            "--out",
            str(tmp_path),
            f"data.dir={data_dir}",
            f"model.net.encoder_name={tiny_encoder}",
            *QUIET,
        ]
    )
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    rows = {r["row"]: r for r in results["rows"]}
    assert set(rows) == {"tfidf_svm", "finetune", "hybrid", "no_lstm", "no_attention", "ce_loss", "no_augment"}
    for row in rows.values():
        assert 0.0 <= row["test/f1_weighted"] <= 1.0 and row["sentences_per_s"] > 0
        assert row["test_f1/surprise"] is not None
    # The synthetic cue words are trivially separable for TF-IDF: a broken baseline would not be.
    assert rows["tfidf_svm"]["test/f1_weighted"] > 0.9
    table = (tmp_path / "results.md").read_text()
    assert table.count("\n") == len(rows) + 2


def test_selection_on_the_test_split_is_refused(tmp_path):
    cfg = compose_train(["experiment=cpu_fast"], tmp_path)
    check_validation_only("ok", cfg)
    with open_dict(cfg):
        cfg.callbacks.early_stopping.monitor = "test/f1_weighted"
    with pytest.raises(BenchConfigError, match="early_stopping.monitor='test/f1_weighted'"):
        check_validation_only("peeking", cfg)


def test_unknown_row_is_named(capsys):
    with pytest.raises(SystemExit):
        main(["--rows", "hybrid,transformer_xl"])
    assert "transformer_xl" in capsys.readouterr().err
