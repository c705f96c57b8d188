"""scripts/long_functions.py: finds functions whose body is over the limit."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "long_functions.py"


def _run(src: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--src", str(src), "--package", "pkg", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_long_body_fails_and_a_long_signature_does_not(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    params = "".join(f"    p{i}: int = 0,\n" for i in range(30))  # a typer-style signature
    (pkg / "ok.py").write_text(f"def short(\n{params}) -> int:\n" + "    x = 1\n" * 5)
    body = "".join(f"        y{i} = {i}\n" for i in range(6))
    (pkg / "bad.py").write_text("class K:\n    def long(self) -> None:\n        '''doc'''\n" + body)
    assert _run(tmp_path, "--max-lines", "6").returncode == 1  # docstring + 6 lines = 7
    done = _run(tmp_path, "--max-lines", "7")
    assert done.returncode == 0, done.stdout
    out = _run(tmp_path, "--max-lines", "6").stdout
    assert "pkg/bad.py:2 K.long" in out and "short" not in out.split("\n", 1)[1]


def test_the_tree_keeps_the_limit():
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout
