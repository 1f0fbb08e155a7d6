"""The export layer is light: publishing needs neither torch nor transformers, and matplotlib only to draw."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["hub", "content", "repository", "card", "figures"]


def test_importing_the_export_modules_loads_neither_torch_nor_transformers():
    code = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}:\n"
        "    importlib.import_module(f'transforms.export.{name}')\n"
        "print(sorted(name for name in ('torch', 'transformers', 'matplotlib') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
