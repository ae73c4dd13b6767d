"""
Files replaced whole or not at all: a reader sees the old file or the new
one, never part of one, even after a crash.
"""

import glob
import os
import tempfile
import time

# Temporaries of a writer killed mid-write are removed by the next writer
# once they are this old (seconds): a younger one may be another writer's.
STALE_AFTER = 3600.0


def writeAtomically(path, text, mode=None, errors="strict"):
    """
    Replace the file at C{path} with C{text} (UTF-8): written to a new
    temporary file beside it (not a name another user could have prepared),
    synced, renamed over it, and the directory synced.

    @param mode: the new file's permission bits, or L{None} for the
        default of a new temporary file (0600).
    @param errors: how to encode what UTF-8 cannot (C{"surrogateescape"}
        for paths read from the file system).
    @raise OSError: if it cannot be written; the old file is left as it was.
    """
    directory = os.path.dirname(os.path.abspath(path))
    prefix = "." + os.path.basename(path) + "."
    removeStaleTemporaries(directory, prefix)
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", errors=errors) as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    try:
        directoryDescriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(directoryDescriptor)
    finally:
        os.close(directoryDescriptor)


def removeStaleTemporaries(directory, prefix, now=None):
    """
    Remove the temporaries that L{writeAtomically} left in C{directory}
    for the files of C{prefix} (a writer killed between writing and
    renaming) once they are L{STALE_AFTER} old; what cannot be removed is
    left.
    """
    now = time.time() if now is None else now
    for temporary in glob.glob(os.path.join(glob.escape(directory), glob.escape(prefix) + "*.tmp")):
        try:
            if now - os.lstat(temporary).st_mtime > STALE_AFTER:
                os.unlink(temporary)
        except OSError:
            pass
