"""scripts/import_cycles.py: finds loops between files and between sub-packages."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "import_cycles.py"


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _run(src: Path, package: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--src", str(src), "--package", package, "--verbose"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_loops_are_found_between_files_and_between_sub_packages(tmp_path):
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg import b\n",
            "pkg/b.py": "def f():\n    from pkg.a import g  # inside a function: still a loop\n",
            "pkg/x/__init__.py": "",
            "pkg/x/m.py": "from ..y.n import v\n",  # relative import, resolved
            "pkg/x/k.py": "",
            "pkg/y/__init__.py": "",
            "pkg/y/n.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from pkg.x.k import K\n",
        },
    )
    res = _run(tmp_path, "pkg")
    assert res.returncode == 1
    assert "file cycles: 1 group(s), 2 file(s)" in res.stdout
    assert "sub-package cycles: 1 group(s), 2 sub-package(s)" in res.stdout
    assert "files: pkg.a pkg.b" in res.stdout
    assert "packages: pkg.x pkg.y" in res.stdout


def test_a_tree_without_loops_passes(tmp_path):
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "import pkg.b\n", "pkg/b.py": ""})
    res = _run(tmp_path, "pkg")
    assert res.returncode == 0, res.stdout
    assert "file cycles: 0 group(s)" in res.stdout


def test_whyrec_has_no_import_loop():
    res = _run(ROOT / "src", "whyrec")
    assert res.returncode == 0, res.stdout
