"""What every `dynamics` command shares: its exit codes, and one-line reasons for a file or
folder it cannot use (no errno numbers, no stack traces)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130

EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "done"),
    (EXIT_FAILED, "the work failed (a job, a check, a service that would not start)"),
    (
        EXIT_USAGE,
        (
            "bad usage: a wrong argument, or an input file or folder that is missing "
            "or cannot be read"
        ),
    ),
    (EXIT_UNAVAILABLE, "a part could not be loaded (an optional package or a detector model)"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
)


def exit_codes_text() -> str:
    """The exit-code table as help text (one code a line)."""
    return "exit codes:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES)


_REASONS = {
    errno.ENOENT: "no such file or folder",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EISDIR: "is a folder, not a file",
    errno.ENOTDIR: "not a folder",
    errno.ELOOP: "too many levels of symbolic links",
    errno.ENAMETOOLONG: "the name is too long",
}


def os_reason(exc: OSError) -> str:
    """A short lowercase reason for an OSError, without its errno number or path."""
    if exc.errno in _REASONS:
        return _REASONS[exc.errno]
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


def file_problem(path: Path) -> str | None:
    """Why `path` cannot be read as a regular file, or None when it can (it is opened)."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            return "is a folder, not a file"
        if not stat.S_ISREG(mode):
            return "not a regular file"
        with open(path, "rb"):
            pass
    except OSError as exc:
        return os_reason(exc)
    return None


def folder_problem(path: Path) -> str | None:
    """Why `path` cannot be listed as a folder, or None when it can."""
    try:
        if not stat.S_ISDIR(os.stat(path).st_mode):
            return "not a folder"
        with os.scandir(path) as entries:
            next(entries, None)
    except OSError as exc:
        return os_reason(exc)
    return None
