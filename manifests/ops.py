"""Table operations on manifests: filter, de-duplicate, split, merge.

Every function takes and returns a manifest frame (DESIGN §2 columns, see
:mod:`wmkit.manifests.schema`) and never touches media. Measures (a clip's
duration, a score read out of ``extra``) are small functions of their own; the
thresholds are arguments, so a policy is just the set of numbers passed in.

Extra columns: :func:`split_manifest` adds a ``split`` column (``"train"`` or
``"val"``). :func:`schema.validate` checks only the required columns, so a
split manifest reads and writes with :func:`schema.read_manifest` and
:func:`schema.write_manifest` as is; the other operations carry extra columns
through untouched.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from wmkit.manifests.schema import COLUMNS, DTYPES, ManifestError, validate

#: Separator between a colliding clip_id and its occurrence number (``abc`` -> ``abc-2``).
#: ``-`` is allowed in clip ids but never produced by ``sanitize_clip_id`` for dots,
#: slashes or spaces, so a suffixed id reads as such.
COLLISION_SEPARATOR = "-"

#: ``extra`` keys naming the scene or source video a clip was cut from, tried in
#: order by :func:`split_group_keys`; clips without any fall back to ``media_uri``.
DEFAULT_GROUP_KEYS: tuple[str, ...] = ("scene_id", "scene", "video_id")

#: Values of the ``split`` column added by :func:`split_manifest`.
SPLITS = ("train", "val")


# --------------------------------------------------------------------------- measures


def clip_duration_s(df: pd.DataFrame) -> pd.Series:
    """Span of each clip in seconds, ``end_s - start_s`` (0 for splat scenes and stills)."""
    return (df["end_s"] - df["start_s"]).astype("float64")


def has_cameras(df: pd.DataFrame) -> pd.Series:
    """True where the source ships its own cameras (non-empty ``cameras_uri``)."""
    return df["cameras_uri"].fillna("").astype(str).str.len() > 0


def extra_score(df: pd.DataFrame, key: str) -> pd.Series:
    """Read the numeric ``extra[key]`` of every row as float64, NaN where absent or null.

    Raises :class:`ManifestError` naming the clip when the value is present but
    not a number: text where a score belongs is a catalogue error to see, not a
    row to drop quietly.
    """
    values = np.full(len(df), np.nan)
    for i, (clip_id, extra) in enumerate(zip(df["clip_id"], df["extra"])):
        value = json.loads(extra).get(key)
        if value is None:
            continue
        try:
            values[i] = float(value)
        except (TypeError, ValueError) as err:
            raise ManifestError(f"clip {clip_id!r}: extra[{key!r}] = {value!r} is not a number") from err
    return pd.Series(values, index=df.index, name=key)


# --------------------------------------------------------------------------- filter


@dataclass
class FilterReport:
    """How many rows each filter removed, in the order the filters ran."""

    rows_in: int
    removed: dict[str, int] = field(default_factory=dict)

    @property
    def rows_out(self) -> int:
        """Rows left after every filter."""
        return self.rows_in - sum(self.removed.values())

    def format(self) -> str:
        """Plain text: one line per filter, then the totals."""
        rows = [("rows in", f"{self.rows_in:,}")]
        rows += [(name, f"-{count:,}") for name, count in self.removed.items()]
        rows.append(("kept", f"{self.rows_out:,}"))
        name_width = max(len(name) for name, _ in rows)
        count_width = max(len(count) for _, count in rows)
        return "\n".join(f"{name:<{name_width}}  {count:>{count_width}}" for name, count in rows)


def filter_manifest(
    df: pd.DataFrame,
    *,
    min_duration_s: float | None = None,
    max_duration_s: float | None = None,
    min_width: int | None = None,
    min_height: int | None = None,
    min_fps: float | None = None,
    sources: list[str] | None = None,
    require_cameras: bool = False,
    score_min: dict[str, float] | None = None,
) -> tuple[pd.DataFrame, FilterReport]:
    """Keep the rows that pass every given threshold; report what each removed.

    Filters run in the order of the arguments (``None`` / ``False`` skips one);
    each count in the report is taken among the rows the earlier filters kept,
    so the counts add up to the rows removed. Bounds are inclusive.
    ``score_min={"aesthetic score": 4.5}`` keeps rows whose JSON ``extra`` has
    that key with a value >= 4.5; a row **without** the key (or with null) is
    dropped, because a clip that was never scored has not passed the bar.
    Duration is ``end_s - start_s`` (:func:`clip_duration_s`).
    """
    tests: list[tuple[str, Callable[[pd.DataFrame], pd.Series]]] = []
    if min_duration_s is not None:
        tests.append((f"duration_s >= {min_duration_s:g}", lambda d: clip_duration_s(d) >= min_duration_s))
    if max_duration_s is not None:
        tests.append((f"duration_s <= {max_duration_s:g}", lambda d: clip_duration_s(d) <= max_duration_s))
    if min_width is not None:
        tests.append((f"width >= {min_width}", lambda d: d["width"] >= min_width))
    if min_height is not None:
        tests.append((f"height >= {min_height}", lambda d: d["height"] >= min_height))
    if min_fps is not None:
        tests.append((f"fps >= {min_fps:g}", lambda d: d["fps"] >= min_fps))
    if sources is not None:
        tests.append((f"source in {sorted(sources)}", lambda d: d["source"].isin(list(sources))))
    if require_cameras:
        tests.append(("has cameras_uri", has_cameras))
    for key, minimum in (score_min or {}).items():
        # NaN (key missing) compares False, so unscored rows are dropped.
        tests.append((f"extra[{key!r}] >= {minimum:g}", lambda d, k=key, m=minimum: extra_score(d, k) >= m))

    report = FilterReport(rows_in=len(df))
    kept = df
    for name, test in tests:
        mask = np.asarray(test(kept), dtype=bool)
        report.removed[name] = int((~mask).sum())
        kept = kept[mask]
    return kept.reset_index(drop=True), report


# --------------------------------------------------------------------------- clip ids


def resolve_clip_id_collisions(df: pd.DataFrame) -> pd.DataFrame:
    """Give every repeated ``clip_id`` after its first row a numbered suffix.

    The first row with an id keeps it; later ones become ``{id}-2``, ``{id}-3``…,
    skipping numbers already taken anywhere in the table. The result depends
    only on row order, so merging the same inputs in the same order always
    yields the same ids (``source_id`` keeps the original spelling).
    """
    ids = df["clip_id"].astype(str).tolist()
    repeated = pd.Series(ids).duplicated().to_numpy()
    if not repeated.any():
        return df
    taken = set(ids)
    next_number: dict[str, int] = {}
    for i in np.flatnonzero(repeated):
        base = ids[i]
        number = next_number.get(base, 2)
        while f"{base}{COLLISION_SEPARATOR}{number}" in taken:
            number += 1
        ids[i] = f"{base}{COLLISION_SEPARATOR}{number}"
        taken.add(ids[i])
        next_number[base] = number + 1
    out = df.copy()
    out["clip_id"] = pd.array(ids, dtype=DTYPES["clip_id"])
    return out


# --------------------------------------------------------------------------- dedup


def _same_span_duplicates(df: pd.DataFrame) -> np.ndarray:
    """Boolean mask of rows whose media and span repeat an earlier kept row.

    Rows share a clip when their ``media_uri`` is equal and both ``|Δstart_s|``
    and ``|Δend_s|`` are below half a frame at the later row's fps (the same
    frames would be decoded); with ``fps == 0`` (unknown) the spans must match
    to 1 µs. Rows are visited in table order, so the first one is kept.
    """
    drop = np.zeros(len(df), dtype=bool)
    start = df["start_s"].to_numpy(dtype=np.float64)
    end = df["end_s"].to_numpy(dtype=np.float64)
    fps = df["fps"].to_numpy(dtype=np.float64)
    for rows in df.groupby("media_uri", sort=False).indices.values():
        if len(rows) < 2:
            continue
        kept_starts: list[float] = []  # kept spans of this media, sorted by start
        kept_ends: list[float] = []
        for pos in rows:
            tol = 0.5 / fps[pos] if fps[pos] > 0 else 1e-6
            lo = bisect.bisect_left(kept_starts, start[pos] - tol)
            hi = bisect.bisect_right(kept_starts, start[pos] + tol)
            if any(abs(kept_starts[j] - start[pos]) < tol and abs(kept_ends[j] - end[pos]) < tol for j in range(lo, hi)):
                drop[pos] = True
                continue
            j = bisect.bisect_right(kept_starts, start[pos])
            kept_starts.insert(j, start[pos])
            kept_ends.insert(j, end[pos])
    return drop


def dedup_manifest(df: pd.DataFrame) -> pd.DataFrame:
    """Drop repeated clips, keeping the first; re-id distinct clips that share a clip_id.

    A row is a duplicate of an earlier row when either
      1. ``source`` and ``source_id`` are equal (the same catalogue entry twice), or
      2. ``media_uri`` is equal and the spans match to half a frame (see
         :func:`_same_span_duplicates`), whatever the sources.
    Rows that are different clips but carry the same ``clip_id`` (two sources
    sanitizing to one id) are both kept; the later ones get a numbered suffix
    (:func:`resolve_clip_id_collisions`).
    """
    same_entry = df.duplicated(subset=["source", "source_id"], keep="first").to_numpy()
    kept = df[~same_entry]
    kept = kept[~_same_span_duplicates(kept)]
    return resolve_clip_id_collisions(kept.reset_index(drop=True))


# --------------------------------------------------------------------------- split


def split_group_keys(df: pd.DataFrame, group_keys: tuple[str, ...] = DEFAULT_GROUP_KEYS) -> pd.Series:
    """The leakage group of every row: the first non-empty ``extra[k]`` of ``group_keys``, else ``media_uri``.

    Clips of one scene or one source video share a group and so a split.
    Values from ``extra`` are prefixed with their key (``scene_id=abc``) so they
    never equal a media path by accident.
    """
    groups = []
    for uri, extra in zip(df["media_uri"], df["extra"]):
        values = json.loads(extra)
        key = next((k for k in group_keys if values.get(k) not in (None, "")), None)
        groups.append(f"{key}={values[key]}" if key else f"media_uri={uri}")
    return pd.Series(groups, index=df.index, dtype="string", name="group")


def unit_hash(text: str, seed: str) -> float:
    """Map ``seed`` + ``text`` to a number in [0, 1), the same on every machine and run."""
    digest = hashlib.blake2b(f"{seed}\x00{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def split_manifest(
    df: pd.DataFrame,
    val_fraction: float,
    seed: str = "wmkit",
    group_keys: tuple[str, ...] = DEFAULT_GROUP_KEYS,
) -> pd.DataFrame:
    """Return a copy of ``df`` with a ``split`` column, ``"val"`` for about ``val_fraction`` of groups.

    A row goes to val when ``unit_hash(group, seed) < val_fraction``, where
    ``group`` is :func:`split_group_keys` (scene / source video, else
    ``media_uri``). Hashing the group rather than the clip keeps every clip of
    one scene in one split (no train/val leakage); hashing with blake2b rather
    than ``hash()`` makes the split identical across runs and machines, and a
    row's split never changes when other rows are added or removed. Any
    existing ``split`` column is replaced.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    groups = split_group_keys(df, group_keys)
    u = np.array([unit_hash(g, seed) for g in groups], dtype=np.float64)
    out = df.copy()
    train, val = SPLITS
    out["split"] = pd.array(np.where(u < val_fraction, val, train), dtype="string")
    return out


# --------------------------------------------------------------------------- merge


def merge_manifests(dfs: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate manifests in order, re-id colliding clip_ids, validate.

    Colliding ids get a numbered suffix (:func:`resolve_clip_id_collisions`);
    nothing is dropped, so merging overlapping catalogues keeps their repeats
    for :func:`dedup_manifest` to remove. Columns beyond the required ones
    (e.g. ``split``) are kept only when every input has them; otherwise they
    are dropped, since a half-filled ``split`` would mislabel rows.
    """
    if not dfs:
        raise ValueError("merge_manifests needs at least one manifest")
    for i, df in enumerate(dfs):
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise ManifestError(f"manifest {i} to merge is missing columns {missing}")
    additional = [c for c in dfs[0].columns if c not in COLUMNS and all(c in df.columns for df in dfs[1:])]
    columns = list(COLUMNS) + additional
    merged = pd.concat([df[columns].astype(DTYPES) for df in dfs], ignore_index=True)
    merged = resolve_clip_id_collisions(merged)
    validate(merged)
    return merged
