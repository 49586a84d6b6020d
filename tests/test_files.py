"""Files written whole or not at all (``lrfind._files``)."""

from __future__ import annotations

import os

import pytest

from lrfind._files import write_whole


def test_a_file_is_written_whole_with_the_permissions_open_gives(tmp_path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    path = write_whole(tmp_path / "best.json", '{"a": 1}')
    assert path.read_text() == '{"a": 1}' and write_whole(path, b"\x89PNG").read_bytes() == b"\x89PNG"
    assert os.stat(path).st_mode == os.stat(plain).st_mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "plain.txt"]


def test_a_write_that_fails_leaves_the_old_file_and_no_part(tmp_path, monkeypatch) -> None:
    path = write_whole(tmp_path / "best.json", "old")

    def stopped(*args):
        raise KeyboardInterrupt          # Ctrl-C after the new content was written, before the rename

    monkeypatch.setattr(os, "replace", stopped)
    with pytest.raises(KeyboardInterrupt):
        write_whole(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["best.json"]


def test_a_missing_folder_is_named_as_asked(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"No such file or directory: '.*nowhere/r\.json'"):
        write_whole(tmp_path / "nowhere" / "r.json", "{}")


@pytest.mark.parametrize("path", ["", " ", "/"])
def test_a_path_without_a_file_name_is_a_clear_error(path) -> None:
    with pytest.raises(ValueError, match="no file name to write to"):
        write_whole(path, "{}")


def test_the_file_reaches_the_disk_before_the_rename_and_the_rename_after(tmp_path, monkeypatch) -> None:
    """A power cut after the rename must not leave an empty best.json: the data is flushed (fsync)
    before the file is renamed into place, and the folder's entry after."""
    calls, fsync, replace = [], os.fsync, os.replace

    def synced(fd):
        calls.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        fsync(fd)

    def replaced(src, dst):
        calls.append(("replace", os.path.basename(dst)))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", synced)
    monkeypatch.setattr(os, "replace", replaced)
    write_whole(tmp_path / "best.json", '{"a": 1}')
    assert [c[0] for c in calls] == ["fsync", "replace", "fsync"]
    assert calls[0][1].startswith(".best.json.") and calls[0][1].endswith(".part")   # the data, before
    assert calls[2][1] == tmp_path.name                                               # the folder, after
