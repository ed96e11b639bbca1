"""Loaders: how a dependency is read into a value and how a returned value is written.

A loader is a small frozen dataclass with `load(path)` and `save(value, path)`. Subclass
`Loader` for your own formats; keep it a dataclass so its settings are part of the
stage's cache key (two `JSON(indent=2)` loaders compare and hash equal).
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Loader:
    """Base class: override `load` and `save`."""

    def load(self, path: pathlib.Path) -> Any:
        raise NotImplementedError(f"{type(self).__name__} cannot load {path}")

    def save(self, value: Any, path: pathlib.Path) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot save {path}")

    @property
    def writes_itself(self) -> bool:
        """True when the stage writes the file and returns only its path."""
        return False


@dataclass(frozen=True)
class PathOnly(Loader):
    """The stage gets the path and reads or writes the file itself."""

    def load(self, path: pathlib.Path) -> pathlib.Path:
        return path

    def save(self, value: Any, path: pathlib.Path) -> None:
        return None

    @property
    def writes_itself(self) -> bool:
        return True


@dataclass(frozen=True)
class Text(Loader):
    encoding: str = "utf-8"

    def load(self, path: pathlib.Path) -> str:
        return path.read_text(encoding=self.encoding)

    def save(self, value: str, path: pathlib.Path) -> None:
        path.write_text(value, encoding=self.encoding)


@dataclass(frozen=True)
class Bytes(Loader):
    def load(self, path: pathlib.Path) -> bytes:
        return path.read_bytes()

    def save(self, value: bytes, path: pathlib.Path) -> None:
        path.write_bytes(value)


@dataclass(frozen=True)
class JSON(Loader):
    indent: int | None = 2
    sort_keys: bool = True

    def load(self, path: pathlib.Path) -> Any:
        return json.loads(path.read_text(encoding="utf-8"))

    def save(self, value: Any, path: pathlib.Path) -> None:
        text = json.dumps(value, indent=self.indent, sort_keys=self.sort_keys)
        path.write_text(text + "\n", encoding="utf-8")


@dataclass(frozen=True)
class YAML(Loader):
    def load(self, path: pathlib.Path) -> Any:
        import yaml

        return yaml.safe_load(path.read_text(encoding="utf-8"))

    def save(self, value: Any, path: pathlib.Path) -> None:
        import yaml

        path.write_text(yaml.safe_dump(value, sort_keys=True), encoding="utf-8")


@dataclass(frozen=True)
class Pickle(Loader):
    # `pickle.HIGHEST_PROTOCOL` of every Python Pivot supports, written out: `pickle` is
    # imported only when a stage loads or saves with it.
    protocol: int = 5

    def load(self, path: pathlib.Path) -> Any:
        import pickle

        with open(path, "rb") as handle:
            return pickle.load(handle)

    def save(self, value: Any, path: pathlib.Path) -> None:
        import pickle

        with open(path, "wb") as handle:
            pickle.dump(value, handle, protocol=self.protocol)


@dataclass(frozen=True)
class CSV(Loader):
    """A pandas DataFrame (needs pandas installed: `pip install pivot[pandas]`)."""

    index: bool = False

    def load(self, path: pathlib.Path) -> Any:
        return _pandas().read_csv(path)

    def save(self, value: Any, path: pathlib.Path) -> None:
        _pandas()
        value.to_csv(path, index=self.index)


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        from pivot.errors import MissingPackage

        raise MissingPackage(
            "pivot.loaders.CSV needs pandas, which is not installed. "
            "Install it with `pip install pandas` (or `pip install pivot[pandas]`).",
            package="pandas",
        ) from None
    return pandas
