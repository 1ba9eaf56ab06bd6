"""Writing a user's file: never lost, never silently rewritten (docs/suggest.md, "Files").

A path is read and written where the command started, whatever directory the program moves
to; a symlink is written through to the file it points to; the file keeps its mode, its line
endings and its byte-order mark; a read-only file is refused; and nothing replaces a file
unless the new text validates at the file's own path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .._policy.load import load

BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Style:
    """How a text file writes its lines: a UTF-8 byte-order mark, CRLF line endings."""

    bom: bool = False
    crlf: bool = False

    @classmethod
    def of(cls, raw: bytes) -> Style:
        """The style of a file's bytes (CRLF when most of its lines end so)."""
        crlf = raw.count(b"\r\n")
        return cls(raw.startswith(BOM), crlf > 0 and crlf >= raw.count(b"\n") - crlf)

    def encode(self, text: str) -> bytes:
        """``text`` (LF lines) as this style writes it."""
        if self.crlf:
            text = text.replace("\r\n", "\n").replace("\n", "\r\n")
        return (BOM if self.bom else b"") + text.encode("utf-8")


def anchored(path: str, start: str) -> str:
    """``path`` as given on the command line, absolute from the directory the command
    started in (a program may change directory before the command writes it)."""
    return path if path == "-" else os.path.join(start, path)


def read(path: str) -> tuple[str, Style]:
    """A text file's text (LF lines, no byte-order mark) and its style.

    :raises OSError: it cannot be read.
    """
    with open(path, "rb") as f:
        raw = f.read()
    style = Style.of(raw)
    text = raw[len(BOM) :] if style.bom else raw
    return text.decode("utf-8").replace("\r\n", "\n"), style


def refusal(path: str, shown: str, *, policy: bool = True) -> str | None:
    """Why ``path`` cannot be written (``shown`` is how the user gave it); None when it can.

    Checked before the program runs, so that nothing the run finds is lost to a file that
    could not be written at its end.

    :param policy: the file is a policy: an existing file replaced must be YAML by its name
        (``-o`` onto the program itself, or onto notes, is a typing slip, never a policy).
    """
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"cannot write {shown}: a loop of symbolic links"
    real = os.path.realpath(path)
    folder = os.path.dirname(real)
    if not os.path.isdir(folder):
        return f"cannot write {shown}: no folder {folder}"
    if os.path.isdir(real):
        return f"cannot write {shown}: it is a folder"
    if os.path.exists(real):
        mode = os.stat(real).st_mode
        if not stat.S_ISREG(mode):
            return f"cannot write {shown}: it is not a regular file"
        if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            return f"cannot write {shown}: it is read-only (left as it is)"
        if policy and not real.endswith((".yaml", ".yml")):
            return f"cannot write {shown}: it exists and is not a .yaml file (left as it is)"
    return None


def same_file(a: str, b: str) -> bool:
    """Whether two paths name one file (through links, or spelt differently)."""
    return os.path.realpath(a) == os.path.realpath(b)


def write_checked(
    text: str,
    path: str,
    validate: Callable[[str], Sequence[str]],
    *,
    style: Style | None = None,
) -> None:
    """Replace ``path`` (through a symlink, its target) with ``text``, keeping its mode and,
    unless ``style`` says otherwise, its style; only once ``validate`` finds no error in the
    new text where the user names it: next to ``path`` itself, not its link's target, so that
    relative ``extends`` resolve as they will when the file is loaded by that name
    (``validate(temp_path)`` returns the errors, each a line).

    :raises OSError: the folder cannot be written.
    :raises ValueError: the text does not validate there (a bug of the writer): ``path`` is
        left as it was.
    """
    real = os.path.realpath(path)
    mode = None
    if os.path.exists(real):
        with open(real, "rb") as f:
            raw = f.read()
        style = style or Style.of(raw)
        mode = stat.S_IMODE(os.stat(real).st_mode)
    if mode is None:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    data = (style or Style()).encode(text)
    named = os.path.dirname(os.path.abspath(path))
    for folder in dict.fromkeys((named, os.path.dirname(real))):  # validated, then written
        fd, temp = tempfile.mkstemp(prefix=".policycompile-", suffix=".yaml", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(temp, mode)
            if folder == named:
                errors = validate(temp)
                if errors:
                    raise ValueError(f"the new text of {path} does not validate there: {errors[0]}")
            if folder == os.path.dirname(real):
                os.replace(temp, real)
                return
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temp)


def extends_chain(path: str, profile: str | None = "") -> set[str]:
    """The real paths of the policy at ``path`` and of every file it extends (which a
    command must never write over with a file that extends them)."""
    return {os.path.realpath(s) for s in load(path, profile=profile).sources}
