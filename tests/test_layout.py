"""The package's floors: a module imports only from its own floor's package or from floors below.

From the base up: errors, labels, utils; encoders; data | models; inference | sweeps; reporting;
callbacks; the commands (each on its own); the measurement tools. Siblings on a floor (data and models,
inference and sweeps, two commands) do not import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import emotion_lab

PACKAGE = Path(emotion_lab.__file__).parent
COMMANDS = ("train", "evaluate", "export", "predict", "serve", "report")
FLOORS = [
    ("errors", "labels", "utils"),
    ("encoders",),
    ("data", "models"),
    ("inference", "sweeps"),
    ("reporting",),
    ("callbacks",),
    COMMANDS,
    ("tools",),
]
# Units that may import each other although they share a floor: the base is one unit.
SHARED = {"errors", "labels", "utils"}


def unit(module: str) -> str:
    """The floor unit of `emotion_lab.x.y`: its first component (a subpackage, a command or a base module)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def floor(name: str) -> int:
    return next(i for i, names in enumerate(FLOORS) if name in names)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every emotion_lab import in `path`, lazy ones inside functions included."""
    module = "emotion_lab." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
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
    for path in sorted(PACKAGE.rglob("*.py")):
        here = unit("emotion_lab." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        if here in ("", "__init__"):
            continue
        for line, target in imports(path):
            there = unit(target)
            if there == here or (here in SHARED and there in SHARED):
                continue
            if floor(there) >= floor(here):
                where = f"{path.relative_to(PACKAGE.parent)}:{line}"
                found.append(f"{where} imports {target} (floor {floor(there)} >= {floor(here)})")
    return found


def test_every_module_has_a_floor():
    names = {
        unit("emotion_lab." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts)) for p in PACKAGE.rglob("*.py")
    }
    assert names - {"", "__init__"} <= {name for names in FLOORS for name in names}


def test_no_import_runs_up_a_floor_or_across_one():
    assert violations() == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The rule catches what it is for: a data module importing a model module, even lazily."""
    fake = tmp_path / "emotion_lab"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "x.py").write_text("def f():\n    from emotion_lab.models.networks import EmotionNet\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    assert violations() == ["emotion_lab/data/x.py:2 imports emotion_lab.models.networks (floor 2 >= 2)"]
