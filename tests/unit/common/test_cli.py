"""The commands' shared exit codes and one-line reasons for unusable files and folders."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

from services.common.cli import (
    EXIT_CODES,
    exit_codes_text,
    file_problem,
    folder_problem,
    os_reason,
)
from tests.unit.common.unreadable import unprivileged_prefix


def test_usable_file_and_folder_have_no_problem(tmp_path: Path) -> None:
    (tmp_path / "f.png").write_bytes(b"x")
    assert file_problem(tmp_path / "f.png") is None
    assert folder_problem(tmp_path) is None


def test_missing_wrong_kind_and_special_files(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    os.mkfifo(tmp_path / "pipe")  # opening it for reading would block: refused from its mode
    assert file_problem(tmp_path / "nope") == "no such file or folder"
    assert file_problem(tmp_path) == "is a folder, not a file"
    assert file_problem(tmp_path / "pipe") == "not a regular file"
    assert file_problem(tmp_path / "f" / "below") == "not a folder"
    assert folder_problem(tmp_path / "nope") == "no such file or folder"
    assert folder_problem(tmp_path / "f") == "not a folder"


def test_unreadable_file_and_folder_say_permission_denied(tmp_path: Path) -> None:
    (tmp_path / "locked.png").write_bytes(b"x")
    (tmp_path / "locked.png").chmod(0)
    (tmp_path / "closed").mkdir()
    (tmp_path / "closed").chmod(0)
    code = (
        "import sys; from pathlib import Path; from services.common.cli import "
        "file_problem, folder_problem; "
        "print(file_problem(Path(sys.argv[1])), folder_problem(Path(sys.argv[2])), sep='|')"
    )
    try:
        out = subprocess.run(
            [
                *unprivileged_prefix(),
                sys.executable,
                "-c",
                code,
                str(tmp_path / "locked.png"),
                str(tmp_path / "closed"),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[3],
        ).stdout
    finally:
        (tmp_path / "closed").chmod(0o700)
    assert out.strip() == "permission denied|permission denied"


def test_reasons_carry_no_errno_number_or_path() -> None:
    assert os_reason(FileNotFoundError(errno.ENOENT, "No such file or directory", "/x")) == (
        "no such file or folder"
    )
    assert os_reason(OSError(errno.EIO, "Input/output error")) == "input/output error"


def test_exit_code_table_lists_each_code_once() -> None:
    codes = [code for code, _ in EXIT_CODES]
    assert codes == sorted(set(codes)) and {0, 1, 2, 3, 130} == set(codes)
    lines = exit_codes_text().splitlines()
    assert lines[0] == "exit codes:" and len(lines) == 1 + len(codes)
