"""Histogram figures of the dataset cards, drawn with matplotlib (the optional `hub` extra).

    png = histogram_png(histogram(seconds, "turns by duration", "turn duration (seconds)"))
    read_histogram_png(png).counts  # the numbers the figure shows, from its PNG text chunk

The PNG carries its title, x label, bin edges and counts as JSON in a text chunk, so a test can check a
figure against the data. Its bytes depend only on the histogram (matplotlib's default style, no
software or date entry), so a rebuilt repository is byte-for-byte the same. matplotlib is imported
only here, when a figure is drawn, and never through pyplot: no backend or style is left set.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np

from csm_synthetic.errors import InputError

HISTOGRAM_BINS = 30
BAR_COLOR = "#3465a4"
TEXT_KEY = "histogram"  # the PNG text chunk holding the numbers
SIZE_INCHES, DPI = (7.2, 4.0), 100


@dataclass(frozen=True)
class Histogram:
    title: str  # what is counted, e.g. "turns by duration"
    x_label: str
    edges: tuple[float, ...]
    counts: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.counts)


def histogram(values: np.ndarray, title: str, x_label: str, bins: int = HISTOGRAM_BINS) -> Histogram:
    array = np.asarray(values, dtype=np.float64)
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 1.0)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    counts, edges = np.histogram(array, bins=bins, range=(low, high))
    return Histogram(title, x_label, tuple(float(edge) for edge in edges), tuple(int(count) for count in counts))


def require_matplotlib():
    """matplotlib's Agg canvas, figure and style modules; an `InputError` saying how to install it."""
    try:
        from matplotlib import style
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise InputError(
            "the dataset card's figures need matplotlib: run `uv sync --extra hub` "
            "(or `pip install 'csm-synthetic[hub]'`)"
        ) from error
    return FigureCanvasAgg, Figure, style


def histogram_png(hist: Histogram) -> bytes:
    """A bar chart of `hist` as PNG bytes, its numbers in the `histogram` text chunk."""
    canvas_class, figure_class, style = require_matplotlib()
    with style.context("default"):  # the same picture whatever the user's matplotlibrc says
        figure = figure_class(figsize=SIZE_INCHES, dpi=DPI)
        canvas_class(figure)
        axes = figure.add_subplot()
        edges = np.asarray(hist.edges)
        axes.bar(edges[:-1], hist.counts, width=np.diff(edges), align="edge", color=BAR_COLOR, edgecolor="white")
        axes.set_xlim(edges[0], edges[-1])
        axes.set_title(f"{hist.title}: {hist.total} in {len(hist.counts)} bins")
        axes.set_xlabel(hist.x_label)
        axes.set_ylabel("count")
        axes.yaxis.get_major_locator().set_params(integer=True)
        figure.tight_layout()
        numbers = {"title": hist.title, "x_label": hist.x_label, "edges": hist.edges, "counts": hist.counts}
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", metadata={"Software": None, TEXT_KEY: json.dumps(numbers)})
    return buffer.getvalue()


def read_histogram_png(png: bytes) -> Histogram:
    """The histogram a figure of `histogram_png` shows (from its text chunk)."""
    from PIL import Image  # Pillow comes with matplotlib

    with Image.open(io.BytesIO(png)) as image:
        numbers = json.loads(image.text[TEXT_KEY])
    return Histogram(numbers["title"], numbers["x_label"], tuple(numbers["edges"]), tuple(numbers["counts"]))
