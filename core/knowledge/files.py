"""Which files a `cosmo kb ingest PATH…` means, and what each document is called."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from core.knowledge.extractors import SUPPORTED_EXTENSIONS


@dataclass(frozen=True)
class SourceFile:
    """A file to ingest and its document name: its path below the root
    (`guides/setup.md`). Names depend on the root, not on which folder was named, so
    ingesting `docs/guides` and later `docs` (same root) names each file once."""

    path: Path
    name: str


class OutsideRoot(ValueError):
    """A path to ingest is not under the root its document names are relative to."""

    def __init__(self, path: Path, root: Path) -> None:
        super().__init__(f"{path} is not under the root {root}")
        self.path = path
        self.root = root


def discover(paths: Iterable[Path], root: Path) -> list[SourceFile]:
    """Files named directly (whatever their type: an unsupported one then fails loudly) and
    the supported files under folders, recursively, skipping hidden files and folders below
    the folder named. Each is named by its path relative to `root`.

    Raises `FileNotFoundError` for a path that does not exist and `OutsideRoot` for one
    that is not under `root`.
    """
    top = root.resolve()
    found: dict[str, SourceFile] = {}
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(str(path))
        # Resolved so `./docs`, `docs/../docs` and an absolute path name the same documents.
        where = path.resolve()
        if not where.is_relative_to(top):
            raise OutsideRoot(path, top)
        if where.is_dir():
            for file in sorted(where.rglob("*")):
                relative = file.relative_to(where)
                if any(part.startswith(".") for part in relative.parts):
                    continue
                if file.is_file() and file.suffix.lower() in SUPPORTED_EXTENSIONS:
                    name = (where / relative).relative_to(top).as_posix()
                    found[name] = SourceFile(file, name)
        else:
            name = where.relative_to(top).as_posix()
            found[name] = SourceFile(path, name)
    return list(found.values())
