"""Which files a `cosmo kb ingest PATH…` means, and what each document is called."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from core.knowledge.extractors import SUPPORTED_EXTENSIONS


@dataclass(frozen=True)
class SourceFile:
    """A file to ingest and its document name: the path below the folder it was found in
    (`guides/setup.md`), or the file name when it was named directly. Names are stable
    across runs from anywhere, which is what lets an unchanged file be skipped."""

    path: Path
    name: str


def discover(paths: Iterable[Path]) -> list[SourceFile]:
    """Files named directly (whatever their type: an unsupported one then fails loudly) and
    the supported files under folders, recursively, skipping hidden files and folders.

    Raises `FileNotFoundError` for a path that does not exist.
    """
    found: dict[str, SourceFile] = {}
    for path in paths:
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                relative = file.relative_to(path)
                if any(part.startswith(".") for part in relative.parts):
                    continue
                if file.is_file() and file.suffix.lower() in SUPPORTED_EXTENSIONS:
                    name = relative.as_posix()
                    found[name] = SourceFile(file, name)
        elif path.exists():
            found[path.name] = SourceFile(path, path.name)
        else:
            raise FileNotFoundError(str(path))
    return list(found.values())
