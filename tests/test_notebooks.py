"""The notebooks run end to end on a tiny run (nbclient), and are stored without outputs."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from omegaconf import open_dict

from emotion_lab.train import train
from emotion_lab.utils.config import PROJECT_ROOT

NOTEBOOKS = {p.stem: p for p in sorted((Path(PROJECT_ROOT) / "notebooks").glob("*.ipynb"))}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir, tiny_encoder) -> Path:
    """A finished tiny run laid out as training lays it out: outputs/<task>/runs/<time>/."""
    from tests.conftest import compose_config, tiny_overrides

    outputs = tmp_path_factory.mktemp("outputs")
    run = outputs / "train" / "runs" / "2026-01-01_00-00-00-000000"
    overrides = [
        *tiny_overrides(tiny_encoder, data_dir),
        "trainer.max_epochs=2",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
        "export=false",
    ]
    cfg = compose_config("train", overrides, run)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run)
    train(cfg)
    return run


def parameters_for(name: str, run: Path, data_dir: Path, tmp_path: Path) -> dict[str, str]:
    if name == "logit_bias_check":  # a benchmark row folder: <row>/seed<N>/checkpoints/
        (tmp_path / "hybrid").mkdir()
        (tmp_path / "hybrid" / "seed42").symlink_to(run)
        return {"BENCH": str(tmp_path / "hybrid"), "DATA_DIR": str(data_dir)}
    if name == "compare_runs":
        return {"OUTPUTS": str(run.parents[2])}
    return {"RUN_DIR": str(run), "DATA_DIR": str(data_dir)}


def with_parameters(notebook, values: dict[str, str]):
    """Papermill's convention: a cell after the one tagged `parameters` replaces its values."""
    (index,) = [i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])]
    source = "\n".join(f"{key} = {value!r}" for key, value in values.items())
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(source))
    return notebook


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_the_notebook_runs_end_to_end(name, tiny_run, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(PROJECT_ROOT))  # the kernel imports this checkout's emotion_lab
    notebook = with_parameters(
        nbformat.read(NOTEBOOKS[name], as_version=4), parameters_for(name, tiny_run, data_dir, tmp_path)
    )
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    if name == "first_look":  # the figures, the scalars' plot and the attention figures were drawn
        images = [o for o in outputs if "image/png" in o.get("data", {})]
        assert len(images) == 9  # 5 from figures/, the run's attention figure, the pies, the scalars, yours
    if name == "compare_runs":
        assert "train/runs/2026-01-01_00-00-00-000000" in text  # the tiny run is a row of the table
    if name == "logit_bias_check":
        assert "seed42: held-out validation gain" in text


def test_every_notebook_is_stored_without_outputs_and_takes_parameters():
    assert set(NOTEBOOKS) == {"compare_runs", "first_look", "logit_bias_check"}
    for name, path in NOTEBOOKS.items():
        notebook = nbformat.read(path, as_version=4)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{name} holds outputs"
        assert any("parameters" in c.metadata.get("tags", []) for c in code), f"{name} has no parameters cell"
