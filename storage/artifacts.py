"""Files derived from a case (heatmaps per model version, ...), stored beside the image store and written atomically.

Keys are (case id, artifact name); both are validated so a request can never reach outside the folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from storage.errors import InvalidImageKeyError
from storage.files import write_durably

# A case's decoded pixels as a 16-bit PNG (kept by the analysis, api/case_media.py; exported with expert labels).
CASE_PIXELS_ARTIFACT = "pixels-png16.png"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")


def safe_artifact_name(*parts: str) -> str:
    """Join parts into one file name, replacing every character outside [A-Za-z0-9._+-] with '_'."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", "-".join(parts))[:200]


class ArtifactStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, case_id: str, name: str) -> Path:
        if not _SAFE_NAME.match(case_id) or not _SAFE_NAME.match(name) or ".." in name or ".." in case_id:
            raise InvalidImageKeyError("Invalid artifact key.")
        return self.root / case_id / name

    def get(self, case_id: str, name: str) -> bytes | None:
        path = self.path(case_id, name)
        return path.read_bytes() if path.is_file() else None

    def put(self, case_id: str, name: str, data: bytes) -> None:
        path = self.path(case_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_durably(path, data)
