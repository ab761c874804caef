"""Content-addressed-ish blob directory for the embedded `sql` output store."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from core.errors import NotFound


class BlobDirectory:
    """Files under `root/<tenant>/<key>`, written atomically (temp file + rename + fsync)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError("blob key escapes the blob directory")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound("content", key) from None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
