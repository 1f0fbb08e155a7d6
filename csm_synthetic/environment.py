"""Facts about the running environment that reports and dataset cards record."""

from __future__ import annotations

import argparse
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


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's layout and shows defaults, except the meaningless ones (None, off flags)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)
