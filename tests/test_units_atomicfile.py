"""
resmon.atomicfile: a file replaced whole, and the temporaries a writer
killed mid-write left behind removed by the next writer once stale.
"""

import os
import stat
import time

from resmon.atomicfile import STALE_AFTER, writeAtomically


def _age(path, seconds):
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_file_is_replaced_whole_with_its_mode(tmp_path):
    path = tmp_path / "users.toml"
    path.write_text("old")
    writeAtomically(str(path), "new ✓", mode=0o640)
    assert path.read_text(encoding="utf-8") == "new ✓"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["users.toml"]


def test_a_stale_temporary_of_the_file_is_removed_a_fresh_one_and_others_left(tmp_path):
    path = tmp_path / "users[1].toml"  # glob's special characters in the name
    stale = tmp_path / ".users[1].toml.abc123.tmp"
    fresh = tmp_path / ".users[1].toml.def456.tmp"
    another = tmp_path / ".other.toml.abc123.tmp"
    for temporary in (stale, fresh, another):
        temporary.write_text("hashes")
    _age(stale, STALE_AFTER + 60)
    _age(another, STALE_AFTER + 60)
    writeAtomically(str(path), "new")
    assert path.read_text() == "new"
    assert not stale.exists()
    assert fresh.exists()  # perhaps another writer's, still writing
    assert another.exists()  # another file's


def test_a_temporary_that_cannot_be_removed_stops_nothing(tmp_path, monkeypatch):
    path = tmp_path / "list"
    stale = tmp_path / ".list.abc123.tmp"
    stale.write_text("x")
    _age(stale, STALE_AFTER + 60)

    def refuse(name, *args, **kwargs):
        raise PermissionError(13, "Permission denied", name)
    realUnlink = os.unlink
    monkeypatch.setattr(os, "unlink", lambda name, *a, **k: refuse(name) if name == str(stale)
                        else realUnlink(name, *a, **k))
    writeAtomically(str(path), "new")
    assert path.read_text() == "new"
    assert stale.exists()
