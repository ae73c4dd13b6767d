"""
Unit tests of L{resmon.operations.bytecode}: whether the C{-OO} byte code
of a module is up to date where the import system looks, and the list of a
program's modules kept beside it. Real files in a temporary directory.
"""

import os
import py_compile
import sys
import types

import pytest

from resmon.operations import bytecode


@pytest.fixture
def prefix(tmp_path, monkeypatch):
    """
    A C{sys.pycache_prefix} of the test's own, as C{PYTHONPYCACHEPREFIX}
    sets it.
    """
    where = tmp_path / "pycache"
    monkeypatch.setattr(sys, "pycache_prefix", str(where))
    return where


def source(tmp_path, name="mod", text="x = 1\n"):
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return str(path)


def compiled(path, invalidation=py_compile.PycInvalidationMode.TIMESTAMP):
    cached = bytecode.cachedPath(path)
    py_compile.compile(path, cfile=cached, optimize=2, invalidation_mode=invalidation)
    return cached


def test_byte_code_is_up_to_date_until_its_source_changes(tmp_path, prefix):
    path = source(tmp_path)
    cached = bytecode.cachedPath(path)
    assert cached.startswith(str(prefix)) and ".opt-2.pyc" in cached
    assert not bytecode.upToDate(path, cached)
    compiled(path)
    assert bytecode.upToDate(path, cached)
    with open(path, "a") as f:
        f.write("y = 2\n")  # another size
    assert not bytecode.upToDate(path, cached)


def test_byte_code_of_another_python_or_truncated_is_not_up_to_date(tmp_path, prefix):
    path = source(tmp_path)
    cached = compiled(path)
    data = open(cached, "rb").read()
    open(cached, "wb").write(b"\0\0\0\0" + data[4:])
    assert not bytecode.upToDate(path, cached)
    open(cached, "wb").write(data[:10])
    assert not bytecode.upToDate(path, cached)


def test_byte_code_checked_by_hash_is_left_to_the_import_system(tmp_path, prefix):
    path = source(tmp_path)
    cached = compiled(path, py_compile.PycInvalidationMode.CHECKED_HASH)
    assert bytecode.upToDate(path, cached)


def test_stale_sources_leave_out_what_cannot_be_written(tmp_path, prefix):
    fresh, stale = source(tmp_path, "fresh"), source(tmp_path, "stale")
    compiled(fresh)
    assert bytecode.staleSources({fresh, stale}) == [stale]
    # Where the byte code would go is under a regular file: nothing to do.
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    sys.pycache_prefix = str(blocker / "pycache")
    assert bytecode.staleSources({fresh, stale}) == []


def test_a_directory_is_writable_if_its_nearest_existing_ancestor_is(tmp_path):
    assert bytecode.writableDirectory(str(tmp_path / "a" / "b" / "file"))
    (tmp_path / "file").write_text("")
    assert not bytecode.writableDirectory(str(tmp_path / "file" / "b" / "file"))


def test_the_manifest_is_written_whole_and_read_back(tmp_path, prefix):
    anchor = source(tmp_path, "program")
    manifest = bytecode.manifestPath(anchor)
    assert manifest.endswith(".opt-2.modules") and manifest.startswith(str(prefix))
    assert bytecode.readManifest(manifest) is None
    sources = {"/usr/lib/python3/a.py", "/opt/venv/b\udcff.py", "/bad\nname.py"}
    bytecode.writeManifest(manifest, sources)
    assert bytecode.readManifest(manifest) == {"/usr/lib/python3/a.py", "/opt/venv/b\udcff.py"}
    assert os.listdir(os.path.dirname(manifest)) == [os.path.basename(manifest)]


def test_loaded_sources_are_python_sources_but_those_left_out(tmp_path):
    def module(name, origin, cached=True):
        m = types.ModuleType(name)
        m.__spec__ = types.SimpleNamespace(origin=origin, cached="x.pyc" if cached else None)
        return m
    modules = {"a": module("a", "/lib/a.py"), "ssl": module("ssl", "/lib/ssl.py"),
               "OpenSSL.crypto": module("OpenSSL.crypto", "/lib/OpenSSL/crypto.py"),
               "sourceless": module("sourceless", "/lib/sourceless.pyc"),
               "builtin": module("builtin", "built-in", cached=False),
               "reactor": object()}
    assert bytecode.loadedSources(modules, leaveOut=("ssl", "OpenSSL")) == {"/lib/a.py"}
    assert bytecode.loadedSources(modules) == {"/lib/a.py", "/lib/ssl.py",
                                               "/lib/OpenSSL/crypto.py"}


def test_a_manifest_damaged_or_odd_gives_no_error(tmp_path, prefix):
    anchor = source(tmp_path, "program")
    manifest = bytecode.manifestPath(anchor, "plain")
    assert manifest.endswith(".opt-2.plain.modules")
    os.makedirs(os.path.dirname(manifest))
    with open(manifest, "wb") as f:
        f.write(b"\0" * 100 + b"\n/a.py\n\xff\xfe/b.py\n")
    listed = bytecode.readManifest(manifest)
    assert "/a.py" in listed and not any("\0" in line for line in listed)
    # A path the system refuses (a NUL in it) is not up to date: no error.
    assert not bytecode.upToDate("/a\0.py", "/b\0.pyc")
    assert bytecode.byteCodeState(listed) == ([], sorted(listed), [])


def test_byte_code_state_sorts_up_to_date_stale_and_unwritable(tmp_path, prefix):
    fresh, stale = source(tmp_path, "fresh"), source(tmp_path, "stale")
    compiled(fresh)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    blocked = source(elsewhere, "blocked")
    # Its byte code would go under a regular file.
    target = bytecode.cachedPath(blocked)
    blocker = os.path.dirname(target)
    os.makedirs(os.path.dirname(blocker), exist_ok=True)
    open(blocker, "w").close()
    assert bytecode.byteCodeState({fresh, stale, blocked}) == ([fresh], [stale], [blocked])


def test_the_agent_started_again_keeps_the_prefix_given_by_a_flag(monkeypatch):
    """
    C{-X pycache_prefix=...} is not among the flags passed on: the prefix
    goes on in the environment, for the child and the agent started again.
    """
    from resmon.agentrunner import _agentEnvironment
    monkeypatch.setattr(sys, "pycache_prefix", "/var/lib/resmon-agent/pycache")
    environ = _agentEnvironment({"PATH": "/bin"}, withSSL=False)
    assert environ["PYTHONPYCACHEPREFIX"] == "/var/lib/resmon-agent/pycache"
    monkeypatch.setattr(sys, "pycache_prefix", None)
    assert "PYTHONPYCACHEPREFIX" not in _agentEnvironment({"PATH": "/bin"}, withSSL=False)
