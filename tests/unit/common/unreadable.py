"""Running a command for which a mode-000 file is really unreadable, even when the tests run as
root (as CI does): root loses the capabilities that bypass file permissions."""

from __future__ import annotations

import os
import shutil

import pytest

_DAC = "-dac_override,-dac_read_search"


def unprivileged_prefix() -> list[str]:
    """argv prefix that runs the rest without permission overrides; skips if none is possible."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be enforced")
    return ["setpriv", f"--bounding-set={_DAC}", f"--inh-caps={_DAC}"]
