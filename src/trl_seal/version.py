"""The installed `trl-seal` version, in a module that imports nothing else (the CLI and the trainer read it)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trl-seal")
except PackageNotFoundError:  # running from a source checkout that was not installed
    __version__ = "0.1.0.dev0"
