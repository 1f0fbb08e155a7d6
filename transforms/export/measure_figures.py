"""Figures of the quality measures of a raw corpus (`inspect_corpus.py --plots DIR`): one histogram per
language and measure, drawn like the dataset cards' figures (matplotlib, the optional `hub` extra).

    paths = write_measure_figures(inspect_corpus(source, measures=True)["measures"], "plots")
"""

from __future__ import annotations

import os
from pathlib import Path

from .figures import Histogram, histogram_png


def write_measure_figures(measures: dict, folder: str | os.PathLike) -> list[Path]:
    """`<language>_<measure>.png` for each histogram of `csm_synthetic.inspect.measure_distributions`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for language, by_measure in measures["by_language"].items():
        for name, numbers in by_measure.items():
            figure = Histogram(
                f"{language} turns by {name}", f"{name} ({numbers['unit']})", tuple(numbers["edges"]),
                tuple(numbers["counts"]),
            )
            path = folder / f"{language}_{name}.png"
            path.write_bytes(histogram_png(figure))
            written.append(path)
    return written
