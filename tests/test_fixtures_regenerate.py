"""The committed fixtures are exactly what the committed script makes.

Needs espeak-ng and sox (Debian packages; .ci/run installs them). Byte-identical
output proves the script, not a hand-edited file, is the source of truth.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
AUDIO = ROOT / "fixtures" / "audio"


@pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("sox")),
                    reason="espeak-ng and sox are not installed (apt-get install espeak-ng sox)")
def test_script_regenerates_identical_fixtures(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "fixtures" / "make_fixtures.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    committed = sorted(p.name for p in AUDIO.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == committed
    for name in committed:
        assert (tmp_path / name).read_bytes() == (AUDIO / name).read_bytes(), name
