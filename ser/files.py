"""Publishing files atomically, so readers never see a half-written model, report or cache entry."""

from __future__ import annotations

import os
from pathlib import Path


def publish(temp: Path | str, target: Path | str) -> None:
    """Give ``temp`` ordinary permissions (0666 less the umask) and rename it over ``target``.

    ``temp`` must be on the same file system as ``target`` (create it in the same folder).
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp, 0o666 & ~umask)
    os.replace(temp, target)
