"""Atomic whole-file writes: the old file stays until the new one is complete, and nothing is left behind."""

import pytest

from emotion_lab.reporting.errors import write_errors_csv
from emotion_lab.utils.atomic import atomic_open, write_bytes, write_text


def test_a_write_replaces_the_file_and_leaves_nothing_beside_it(tmp_path):
    target = tmp_path / "new" / "metrics.json"
    write_text(target, '{"a": 1}')
    write_text(target, '{"a": 2}')
    assert target.read_text() == '{"a": 2}'
    write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]


def test_a_write_that_fails_midway_keeps_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "results.md"
    target.write_text("old table\n")
    with pytest.raises(RuntimeError, match="stopped"), atomic_open(target, "w") as file:
        file.write("half a new table")
        file.flush()
        raise RuntimeError("stopped")
    assert target.read_text() == "old table\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.md"]


def test_a_replaced_file_keeps_its_permissions_and_a_new_one_is_readable_by_others(tmp_path):
    kept, new = tmp_path / "kept.txt", tmp_path / "new.txt"
    kept.write_text("")
    kept.chmod(0o600)
    write_text(kept, "x")
    write_text(new, "x")
    assert kept.stat().st_mode & 0o777 == 0o600
    assert new.stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600


@pytest.mark.parametrize("mode", ["a", "r+", "w+"])
def test_only_whole_file_writes_are_allowed(tmp_path, mode):
    with pytest.raises(ValueError, match="must be 'w' or 'wb'"), atomic_open(tmp_path / "x", mode):
        pass
    assert list(tmp_path.iterdir()) == []


def test_errors_csv_that_fails_midway_keeps_the_previous_one(tmp_path):
    target = tmp_path / "errors.csv"
    target.write_text("the previous run's mistakes\n")
    with pytest.raises(ValueError, match="not_a_column"):  # csv refuses the row after the header is written
        write_errors_csv([{"not_a_column": 1}], target)
    assert target.read_text() == "the previous run's mistakes\n"
    assert [p.name for p in tmp_path.iterdir()] == ["errors.csv"]
