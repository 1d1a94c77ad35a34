"""The code base follows the house style: ruff finds nothing."""

import subprocess
import sys

from support import REPO


def test_ruff_reports_no_problems() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
