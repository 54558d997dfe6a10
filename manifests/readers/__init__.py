"""Catalogue readers: one per source, each mapping the catalogue as shipped to manifest rows.

Every reader is ``read_<source>(root, errors=None) -> pd.DataFrame`` and
returns :func:`~wmkit.manifests.schema.to_manifest` output. ``root`` is the
source's dataset root in its on-disk release layout (each module's docstring
draws it and says where it comes from). Bad rows raise
:class:`~wmkit.manifests.schema.ManifestError` naming the row when ``errors``
is None; with a list they are appended as ``(source_id, reason)`` and the
good rows are returned.

Example::

    bad: list[tuple[str, str]] = []
    df = build_manifest("spatialvid", "/data/SpatialVID-HQ", errors=bad)
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from wmkit.manifests.readers._common import BadRows
from wmkit.manifests.readers.dl3dv import read_dl3dv
from wmkit.manifests.readers.dl3dv_gs import read_dl3dv_gs
from wmkit.manifests.readers.local import read_local
from wmkit.manifests.readers.miradata import read_miradata
from wmkit.manifests.readers.omniworld import read_omniworld
from wmkit.manifests.readers.sekai import read_sekai_game, read_sekai_walk
from wmkit.manifests.readers.spatialvid import read_spatialvid
from wmkit.manifests.schema import SOURCES, ManifestError

__all__ = ["READERS", "BadRows", "build_manifest"]

#: source name (``wmkit.manifests.schema.SOURCES``) -> reader.
READERS: dict[str, Callable[..., pd.DataFrame]] = {
    "spatialvid": read_spatialvid,
    "sekai_walk": read_sekai_walk,
    "sekai_game": read_sekai_game,
    "miradata": read_miradata,
    "omniworld": read_omniworld,
    "dl3dv": read_dl3dv,
    "dl3dv_gs": read_dl3dv_gs,
    "local": read_local,
}
if set(READERS) != set(SOURCES):
    raise RuntimeError(f"readers {sorted(READERS)} do not match manifest sources {sorted(SOURCES)}")


def build_manifest(source: str, root: str | Path, errors: BadRows | None = None) -> pd.DataFrame:
    """Read ``source``'s catalogue under ``root`` into a validated manifest frame.

    Args:
        source: one of :data:`READERS` (``wmkit.manifests.schema.SOURCES``).
        root: the source's dataset root.
        errors: None to raise on the first bad row; a list to collect
            ``(source_id, reason)`` for each bad row and keep going.

    Raises:
        ManifestError: unknown source (the message lists the known ones), a
            missing or malformed catalogue file, or a bad row when ``errors`` is None.
    """
    if source not in READERS:
        raise ManifestError(f"unknown source {source!r}; known sources: {', '.join(READERS)}")
    return READERS[source](Path(root), errors)
