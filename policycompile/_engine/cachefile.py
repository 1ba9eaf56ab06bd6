"""Reading and writing policycompile's cache files (rewritten modules, wrapper codes) beside
Python's own bytecode: a file is trusted only if it is a regular file of a sane size whose
body matches the checksum its header carries, and it is written aside and renamed into place,
through a file this process made itself (docs/apply.md, "Where the wrapper sits").

A cache folder may be shared (``PYTHONPYCACHEPREFIX=/tmp/...``) or damaged: a FIFO or a device
where a cache file should be is never opened for a blocking read, and a name planted where
the file is written aside (a symlink, a FIFO) is never followed; that write is given up.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import stat
import struct
import zlib

#: the largest cache file read (the wrapper codes of a big library are about a megabyte)
LIMIT = 64 << 20
_CHECK = struct.Struct("<I")  # crc32 of the body, first in what follows the caller's header


def read(path: str, header_size: int) -> tuple[bytes, memoryview] | None:
    """(header, body) of the cache file at ``path``, or None: missing, not a regular file,
    too large, too short, or a body that does not match its checksum."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > LIMIT:
            return None
        chunks, size, want = [], 0, info.st_size + 1  # the whole file in one read, as a rule
        while chunk := os.read(fd, want):  # (it may have grown since fstat)
            want = 1 << 20
            chunks.append(chunk)
            size += len(chunk)
            if size > LIMIT:
                return None
    except OSError:
        return None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) < header_size + _CHECK.size:
        return None
    (check,) = _CHECK.unpack_from(data, header_size)
    body = memoryview(data)[header_size + _CHECK.size :]  # (megabytes: never copied)
    if zlib.crc32(body) != check:
        return None
    return data[:header_size], body


def write(path: str, header: bytes, body: bytes) -> None:
    """Write ``header``, the body's checksum and ``body`` to ``path``: aside, through a file
    made here (``O_EXCL``), then renamed into place, so that no reader sees half a file; where
    that cannot be done (a read-only folder, a name already taken), nothing is written."""
    tmp = f"{path}.{os.getpid()}-{_thread.get_ident()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header + _CHECK.pack(zlib.crc32(body)) + body)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
