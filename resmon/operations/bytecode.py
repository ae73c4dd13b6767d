"""
The C{-OO} byte code of the modules a process loads: whether it is up to
date where the import system looks for it (C{sys.pycache_prefix}
included), and the list of those modules, kept beside it, so that a
process about to start another under C{python -OO} (C{resmon-agent},
L{resmon.agentrunner}) can tell whether that one will find it written.

A process that compiles the sources it imports holds several MiB more
than one that loads their byte code, and pip writes only the plain byte
code.
"""

import importlib.util
import os
import sys

from resmon.atomicfile import writeAtomically

OPTIMIZATION = 2
MANIFEST_SUFFIX = ".modules"


def cachedPath(source):
    """
    Where the import system keeps the C{-OO} byte code of C{source}, or
    L{None} if it keeps none (no cache tag).
    """
    try:
        return importlib.util.cache_from_source(source, optimization=OPTIMIZATION)
    except (NotImplementedError, ValueError):
        return None


def upToDate(source, cached):
    """
    Whether C{cached} holds byte code of C{source} as it is now (the header
    the import system checks: magic number, source time and size). Byte
    code checked by hash counts as up to date: the import system checks it.
    """
    try:
        with open(cached, "rb") as f:
            header = f.read(16)
        status = os.stat(source)
    except (OSError, ValueError):  # ValueError: a path with a NUL in it
        return False
    if len(header) < 16 or header[:4] != importlib.util.MAGIC_NUMBER:
        return False
    if int.from_bytes(header[4:8], "little") != 0:
        return True
    return (int.from_bytes(header[8:12], "little") == int(status.st_mtime) & 0xFFFFFFFF
            and int.from_bytes(header[12:16], "little") == status.st_size & 0xFFFFFFFF)


def loadedSources(modules=None, leaveOut=()):
    """
    The source files of the modules loaded (C{modules}, default
    C{sys.modules}) from Python sources, but those of the top-level
    packages named in C{leaveOut}.

    @return: a set of paths.
    """
    sources = set()
    for name, module in list((sys.modules if modules is None else modules).items()):
        spec = getattr(module, "__spec__", None)
        if (spec is None or not spec.cached or not spec.origin or not spec.origin.endswith(".py")
                or name.split(".")[0] in leaveOut):
            continue
        sources.add(spec.origin)
    return sources


def writableDirectory(path):
    """
    Whether the directory of C{path} is, or could be made, writable: its
    nearest existing ancestor is a directory this process may write in.
    """
    directory = os.path.dirname(path)
    while directory and not os.path.lexists(directory):
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK)


def byteCodeState(sources):
    """
    Sort C{sources} by their C{-OO} byte code: up to date; missing or out
    of date where it can be written; missing or out of date where it
    cannot (nothing would change it).

    @return: three lists of paths.
    """
    upToDateSources, stale, unwritable, writable = [], [], [], {}
    for source in sorted(sources):
        cached = cachedPath(source)
        if cached is None or upToDate(source, cached):
            upToDateSources.append(source)
            continue
        directory = os.path.dirname(cached)
        if directory not in writable:
            writable[directory] = writableDirectory(cached)
        (stale if writable[directory] else unwritable).append(source)
    return upToDateSources, stale, unwritable


def staleSources(sources):
    """
    The C{sources} whose C{-OO} byte code is missing or out of date where
    it could be written.

    @return: a list of paths.
    """
    return byteCodeState(sources)[1]


def manifestPath(anchor, flavor=""):
    """
    Where the list of a program's modules is kept: beside the C{-OO} byte
    code of C{anchor} (the program's own module's source), one list per
    C{flavor} (what its options make it load), or L{None}.
    """
    cached = cachedPath(anchor)
    if cached is None:
        return None
    return os.path.splitext(cached)[0] + (f".{flavor}" if flavor else "") + MANIFEST_SUFFIX


def readManifest(path):
    """
    The source files listed in the manifest at C{path}, or L{None} if there
    is none (or it cannot be read).
    """
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return {line for line in f.read().split("\n") if line and "\0" not in line}
    except (OSError, ValueError):
        return None


def writeManifest(path, sources):
    """
    Write the list of C{sources} at C{path}, whole or not at all.

    @raise OSError: if it cannot be written.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    writeAtomically(path, "".join(f"{source}\n" for source in sorted(sources)
                                  if "\n" not in source and "\0" not in source),
                    mode=0o644, errors="surrogateescape")
