"""The package's floors: a module imports only from its own floor's package or from floors below.

From the base up: errors, labels, utils; encoders | robustness; data | models; inference | sweeps; reporting;
callbacks; the commands (each on its own); the measurement tools and the Hydra sweeper plugin. Siblings
on a floor (data and models, inference and sweeps, two commands) do not import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import emotion_lab

PACKAGE = Path(emotion_lab.__file__).parent
PLUGINS = PACKAGE.parent / "hydra_plugins"  # outside the package, on the top floor
COMMANDS = ("train", "evaluate", "export", "predict", "serve", "report")
FLOORS = [
    ("errors", "labels", "utils", "__init__"),
    ("encoders", "robustness"),
    ("data", "models"),
    ("inference", "sweeps"),
    ("reporting",),
    ("callbacks",),
    COMMANDS,
    ("tools", "hydra_plugins"),
]
# Units that may import each other although they share a floor: the base (with the package's __init__) is one.
SHARED = {"errors", "labels", "utils", "__init__"}


def unit(module: str) -> str:
    """The floor unit of `emotion_lab.x.y`: its first component (a subpackage, a command or a base module)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def floor(name: str) -> int:
    return next(i for i, names in enumerate(FLOORS) if name in names)


def module_of(path: Path) -> str:
    if path.is_relative_to(PLUGINS):
        return "hydra_plugins." + ".".join(path.relative_to(PLUGINS).with_suffix("").parts)
    return "emotion_lab." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def unit_of(path: Path) -> str:
    return "hydra_plugins" if path.is_relative_to(PLUGINS) else unit(module_of(path))


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every emotion_lab import in `path`, lazy ones inside functions included."""
    module = module_of(path)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            name = node.module or ""
            if node.level:
                base = module.split(".")[: -node.level]
                name = ".".join([*base, name] if name else base)
            if name == "emotion_lab":  # `from emotion_lab import x`: x is the unit
                found += [(node.lineno, f"emotion_lab.{alias.name}") for alias in node.names]
            elif name.startswith("emotion_lab."):
                found.append((node.lineno, name))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("emotion_lab.")]
    return found


def violations() -> list[str]:
    found = []
    for path in sorted([*PACKAGE.rglob("*.py"), *PLUGINS.rglob("*.py")]):
        here = unit_of(path)
        for line, target in imports(path):
            there = unit(target)
            if there == here or (here in SHARED and there in SHARED):
                continue
            if floor(there) >= floor(here):
                where = f"{path.relative_to(PACKAGE.parent)}:{line}"
                found.append(f"{where} imports {target} (floor {floor(there)} >= {floor(here)})")
    return found


def test_every_module_has_a_floor():
    names = {unit_of(p) for p in [*PACKAGE.rglob("*.py"), *PLUGINS.rglob("*.py")]}
    assert names <= {name for names in FLOORS for name in names}


def test_no_import_runs_up_a_floor_or_across_one():
    assert violations() == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The rule catches what it is for: a data module importing a model module, even lazily."""
    fake = tmp_path / "emotion_lab"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "x.py").write_text("def f():\n    from emotion_lab.models.networks import EmotionNet\n")
    (fake / "__init__.py").write_text("from emotion_lab.data import x\n")
    (tmp_path / "hydra_plugins").mkdir()
    (tmp_path / "hydra_plugins" / "p.py").write_text("from emotion_lab.tools import bench\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    monkeypatch.setattr(__import__(__name__), "PLUGINS", tmp_path / "hydra_plugins")
    assert violations() == [
        "emotion_lab/__init__.py:1 imports emotion_lab.data (floor 2 >= 0)",
        "emotion_lab/data/x.py:2 imports emotion_lab.models.networks (floor 2 >= 2)",
        "hydra_plugins/p.py:1 imports emotion_lab.tools (floor 7 >= 7)",
    ]
