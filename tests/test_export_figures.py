"""Histogram figures: the numbers travel with the PNG, the bytes are reproducible, matplotlib stays optional."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from csm_synthetic.errors import ExitCode, InputError
from transforms.export.figures import histogram, histogram_png, read_histogram_png

ROOT = Path(__file__).resolve().parents[1]


def test_a_figure_carries_its_numbers_and_is_the_same_bytes_every_time():
    values = np.random.default_rng(0).gamma(4.0, 1.5, size=200)
    hist = histogram(values, "turns by duration", "turn duration (seconds)", bins=12)
    assert hist.total == 200 and hist.edges[0] == values.min() and hist.edges[-1] == values.max()
    png = histogram_png(hist)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert read_histogram_png(png) == hist
    assert histogram_png(hist) == png  # no date, version or random id in the file
    assert b"Software" not in png and b"Matplotlib" not in png


def test_drawing_neither_uses_nor_changes_the_host_programs_matplotlib_settings():
    """A user's style does not reach the figure (same bytes), and the figure leaves no style, backend or pyplot."""
    code = (
        "import sys, matplotlib\n"
        "from transforms.export.figures import histogram, histogram_png\n"
        "hist = histogram([1.0, 2.0, 2.5], 't', 'x')\n"
        "plain = histogram_png(hist)\n"
        "matplotlib.rcParams.update({'axes.titlesize': 30, 'patch.facecolor': 'red', 'figure.dpi': 50})\n"
        "assert histogram_png(hist) == plain\n"
        "assert matplotlib.rcParams['axes.titlesize'] == 30 and matplotlib.rcParams['figure.dpi'] == 50\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "ok", result.stderr


@pytest.fixture
def without_matplotlib(monkeypatch):
    """Imports of matplotlib fail, as where the `hub` extra is not installed."""
    for name in [name for name in sys.modules if name == "matplotlib" or name.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def test_without_matplotlib_the_error_says_how_to_install_it(without_matplotlib):
    with pytest.raises(InputError, match=r"uv sync --extra hub.*csm-synthetic\[hub\]"):
        histogram_png(histogram([1.0, 2.0], "t", "x"))


def test_without_matplotlib_publishing_stops_before_reading_anything(without_matplotlib, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import push_to_hub

    target = tmp_path / "repo"
    arguments = ["--input_dir", str(tmp_path / "no_corpus_here"), "--to_dir", str(target)]
    assert push_to_hub.main(arguments) == ExitCode.USAGE
    assert "uv sync --extra hub" in capsys.readouterr().err  # not the missing corpus: that would be read later
    assert not target.exists()
