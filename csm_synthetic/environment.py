"""Facts about the running environment that reports and dataset cards record."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

RECORDED_PACKAGES = ("csm-synthetic", "datasets", "transformers", "torch", "huggingface_hub", "pyarrow", "soundfile")


def package_versions() -> dict[str, str]:
    """Python and the installed versions of the packages that shape the data (read without importing them)."""
    versions = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions
