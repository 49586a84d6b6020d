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
