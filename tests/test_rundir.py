"""Run-directory files: appended, never rewritten, and readable after a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmjp.errors import InputError
from fedmjp.federation.rundir import append_jsonl, read_jsonl


def test_append_adds_a_line_without_rewriting_the_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"round": 1})
    inode, before = path.stat().st_ino, path.read_bytes()
    append_jsonl(path, {"round": 2})
    assert path.stat().st_ino == inode and path.read_bytes().startswith(before)
    assert read_jsonl(path) == [{"round": 1}, {"round": 2}]


def test_a_torn_last_line_from_a_crash_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"round": 1})
    with open(path, "ab") as f:
        f.write(b'{"round": 2, "acc')
    assert read_jsonl(path) == [{"round": 1}]


def test_a_bad_complete_line_is_corruption_named_by_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"round": 1})
    with open(path, "ab") as f:
        f.write(b'{"round": 2, "acc\n')  # the newline says the write was whole: not a crash artefact
    append_jsonl(path, {"round": 3})
    with pytest.raises(InputError, match=r"metrics.jsonl: line 2 is not valid JSON"):
        read_jsonl(path)
