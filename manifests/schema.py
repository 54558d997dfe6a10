"""The manifest table (DESIGN §2): one row per clip, the same columns for every source.

Readers in this folder turn a source's catalogue into a ``pandas.DataFrame``
with exactly :data:`COLUMNS` (in that order, with :data:`DTYPES`); every other
catalogue column is kept, JSON-encoded, in ``extra``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

import pandas as pd

SOURCES = ("spatialvid", "sekai_walk", "sekai_game", "miradata", "omniworld", "dl3dv", "dl3dv_gs", "local")

#: column -> pandas dtype, in manifest order.
DTYPES: dict[str, str] = {
    "clip_id": "string",
    "source": "string",
    "source_id": "string",
    "media_uri": "string",
    "start_s": "float64",
    "end_s": "float64",
    "fps": "float64",
    "width": "int64",
    "height": "int64",
    "num_frames": "int64",
    "caption": "string",
    "license": "string",
    "cameras_uri": "string",
    "depth_uri": "string",
    "extra": "string",
}
COLUMNS = tuple(DTYPES)

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class ManifestError(ValueError):
    """A manifest or catalogue row that breaks the contract; the message names the row."""


def sanitize_clip_id(source_id: str) -> str:
    """Map a source id to a webdataset-safe ``clip_id`` (``[A-Za-z0-9_-]+``).

    Runs of other characters (dots, slashes, spaces) become one ``_``; the
    original stays in ``source_id``. ``"abc.mp4/0001"`` -> ``"abc_mp4_0001"``.
    """
    clip_id = _UNSAFE.sub("_", str(source_id)).strip("_")
    if not clip_id:
        raise ManifestError(f"source id {source_id!r} has no usable characters for a clip_id")
    return clip_id


def extra_json(values: Mapping[str, Any]) -> str:
    """JSON-encode the catalogue columns a reader does not map (NaN -> null, keys sorted)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and v != v:
            return None
        if hasattr(v, "item"):  # numpy scalars
            return clean(v.item())
        return v

    return json.dumps({str(k): clean(v) for k, v in values.items()}, sort_keys=True, ensure_ascii=False, default=str)


def to_manifest(rows: list[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Build a manifest frame from row dicts: fill optional columns, order, cast, check.

    Missing ``caption``/``license``/``cameras_uri``/``depth_uri`` become ``""``,
    missing ``extra`` becomes ``"{}"``. Raises :class:`ManifestError` naming the
    first offending row.
    """
    df = pd.DataFrame(rows).copy()
    for col, default in (("caption", ""), ("license", ""), ("cameras_uri", ""), ("depth_uri", ""), ("extra", "{}")):
        if col not in df:
            df[col] = default
        df[col] = df[col].fillna(default)
    missing = [c for c in COLUMNS if c not in df]
    if missing:
        raise ManifestError(f"manifest is missing columns {missing}")
    df = df[list(COLUMNS)].astype(DTYPES)
    validate(df)
    return df.reset_index(drop=True)


def validate(df: pd.DataFrame) -> None:
    """Raise :class:`ManifestError` naming the first row that breaks the contract."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"manifest is missing columns {missing}")
    for i, row in enumerate(df.itertuples(index=False)):
        where = f"manifest row {i} (clip_id={row.clip_id!r})"
        if not isinstance(row.clip_id, str) or _UNSAFE.search(row.clip_id) or not row.clip_id:
            raise ManifestError(f"{where}: clip_id must match [A-Za-z0-9_-]+")
        if row.source not in SOURCES:
            raise ManifestError(f"{where}: unknown source {row.source!r}; known: {SOURCES}")
        if not (row.end_s >= row.start_s >= 0):
            raise ManifestError(f"{where}: bad span start_s={row.start_s} end_s={row.end_s}")
        if row.num_frames < 0 or row.width < 0 or row.height < 0 or not row.fps >= 0:
            raise ManifestError(f"{where}: negative fps/size/num_frames")
        try:
            json.loads(row.extra)
        except (TypeError, ValueError) as err:
            raise ManifestError(f"{where}: extra is not JSON ({err})") from err
    dup = df["clip_id"].duplicated()
    if dup.any():
        raise ManifestError(f"manifest has duplicate clip_id {df['clip_id'][dup].iloc[0]!r}")


def read_manifest(path: str) -> pd.DataFrame:
    """Read and validate a ``manifest.parquet``."""
    df = pd.read_parquet(path)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"{path}: manifest is missing columns {missing}")
    df = df.astype(DTYPES)
    validate(df)
    return df


def write_manifest(df: pd.DataFrame, path: str) -> None:
    """Validate and write ``df`` as parquet (no index)."""
    validate(df)
    df.to_parquet(path, index=False)
