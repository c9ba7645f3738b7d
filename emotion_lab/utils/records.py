"""What every measurement writes beside its numbers: date, CPU, command, code and versions; and its files."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

from emotion_lab.utils.atomic import write_text
from emotion_lab.utils.config import CHECKOUT, cpu_has_native_bf16, repo_relative


def cpu_model() -> str:
    """The CPU's model name (a speed measured on one CPU does not carry to another)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions(*packages: str) -> dict[str, str]:
    """Installed versions of `packages` (absent ones as "not installed")."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def run_record(tool: str, argv: list[str] | None, code: dict[str, Any], packages: tuple[str, ...]) -> dict[str, Any]:
    """What every measurement records: date, CPU, the command as typed, the code (`provenance()` taken when
    the measurement started) and the versions of `packages`."""
    args = sys.argv[1:] if argv is None else argv
    return {
        "date": date.today().isoformat(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "command": f"python -m emotion_lab.tools.{tool} " + " ".join(args),
        "provenance": code,
        "versions": versions(*packages),
    }


_MD_SPECIAL = str.maketrans(
    {c: "\\" + c for c in "\\`*_[]()#|!~"} | {"<": "&lt;", ">": "&gt;", "&": "&amp;", "\n": " ", "\r": " "}
)


def md_escape(text: str) -> str:
    """Text from a file someone else wrote, as Markdown that shows it literally: no markup, links, HTML or
    table cells come out of it."""
    return str(text).translate(_MD_SPECIAL)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def save_results(out: Path, results: dict[str, Any], table: str) -> None:
    """results.json and results.md into `out` (paths relative to the checkout), and both to the terminal."""
    results = json.loads(repo_relative(json.dumps(results)))
    table = repo_relative(table)
    write_text(out / "results.json", json.dumps(results, indent=2))
    write_text(out / "results.md", table)
    print(json.dumps(results["meta"]))
    print(table)


def provenance() -> dict[str, Any]:
    """What produced a result: code commit (and whether the tree had changes), CPU, torch."""
    import subprocess

    import torch

    def git(*args: str) -> str:
        if CHECKOUT is None:  # installed: the working directory's repository is not this code's
            return ""
        try:
            return subprocess.run(["git", *args], cwd=CHECKOUT, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    return {
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "date": datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
    }
