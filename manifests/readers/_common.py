"""What every catalogue reader shares: CSV reading, number parsing, bad-row policy.

A reader maps each catalogue row to a manifest row dict. A row it cannot map
(missing video, unparsable number, ...) is a *bad row*: with ``errors=None``
the reader raises :class:`ManifestError` naming the row at the first one; with
a list it appends ``(source_id, reason)`` and goes on, so one broken row does
not cost a 2.7M-row build. A catalogue *file* that cannot be parsed at all
(bad CSV quoting, missing header column) always raises, naming the file.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pandas as pd

from wmkit.datasets.video import VideoError, VideoInfo, probe
from wmkit.manifests.schema import COLUMNS, DTYPES, ManifestError, sanitize_clip_id, to_manifest

__all__ = [
    "BadRows",
    "RowError",
    "collect_rows",
    "find_one",
    "parse_float",
    "parse_int",
    "parse_resolution",
    "read_csv_rows",
    "resolve_under",
]

BadRows = list[tuple[str, str]]

# Sekai captions run past csv's default 128 KiB field cap; 2**31-1 is the largest
# value the C implementation accepts on every platform.
_FIELD_SIZE_LIMIT = 2**31 - 1
_RESOLUTION = re.compile(r"^\s*(\d+)\s*[x×X*]\s*(\d+)\s*$")


def probe_video(path: Path) -> VideoInfo:
    """Headers of a catalogued video (``wmkit.datasets.video.probe``); :class:`RowError` naming it if unusable."""
    if not path.is_file():
        raise RowError(f"missing video file {path}")
    try:
        return probe(path)
    except VideoError as err:
        raise RowError(str(err)) from err


class RowError(ValueError):
    """One catalogue row cannot become a manifest row; the message is the reason."""


def read_csv_rows(path: Path, required: Iterable[str]) -> list[dict[str, str]]:
    """Read a catalogue CSV as the source ships it: one dict per row, keyed by header names.

    Header names and values are kept verbatim as strings (SpatialVID's names
    contain spaces; ids such as ``000123`` must not become numbers), so
    ``extra`` holds the catalogue's own spelling. Unnamed header cells
    (MiraData's trailing ``,,``) are dropped where the row's value is empty and
    kept as ``unnamed_<column number>`` otherwise, so nothing written is lost.
    Raises :class:`ManifestError` naming ``path`` (and the line) for a missing
    file, a missing ``required`` column, broken quoting or a row with more
    fields than the header.
    """
    if not path.is_file():
        raise ManifestError(f"catalogue {path}: no such file")
    csv.field_size_limit(_FIELD_SIZE_LIMIT)
    rows: list[dict[str, str]] = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise ManifestError(f"catalogue {path}: empty file, no header row") from None
        except csv.Error as err:
            raise ManifestError(f"catalogue {path}: unreadable header ({err})") from err
        missing = [c for c in required if c not in header]
        if missing:
            raise ManifestError(f"catalogue {path}: missing columns {missing}; header is {header}")
        try:
            for fields in reader:
                if not fields:
                    continue
                if len(fields) > len(header):
                    raise ManifestError(
                        f"catalogue {path} line {reader.line_num}: {len(fields)} fields, header has {len(header)}"
                    )
                fields += [""] * (len(header) - len(fields))
                cells = enumerate(zip(header, fields))
                rows.append({name or f"unnamed_{i}": value for i, (name, value) in cells if name or value})
        except csv.Error as err:
            raise ManifestError(f"catalogue {path} line {reader.line_num}: {err}") from err
    return rows


def find_one(root: Path, patterns: Iterable[str], what: str) -> Path:
    """The single file under ``root`` matching the first pattern that matches; ManifestError otherwise."""
    for pattern in patterns:
        found = sorted(root.glob(pattern))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ManifestError(f"{what}: several catalogues match {root / pattern}: {[str(p) for p in found]}")
    raise ManifestError(f"{what}: no catalogue under {root} (looked for {list(patterns)})")


def parse_float(row: Mapping[str, Any], column: str) -> float:
    """``row[column]`` as a finite float; :class:`RowError` naming the column otherwise."""
    value = row.get(column)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise RowError(f"column {column!r}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise RowError(f"column {column!r}: {value!r} is not finite")
    return number


def parse_int(row: Mapping[str, Any], column: str) -> int:
    """``row[column]`` as an integer (``"12"`` or ``"12.0"``); :class:`RowError` naming the column otherwise."""
    number = parse_float(row, column)
    if number != int(number):
        raise RowError(f"column {column!r}: {row.get(column)!r} is not a whole number")
    return int(number)


def parse_resolution(row: Mapping[str, Any], column: str) -> tuple[int, int]:
    """``"1280x720"`` / ``"1280×720"`` (Unicode multiplication sign) -> ``(width, height)``."""
    value = str(row.get(column, ""))
    match = _RESOLUTION.match(value)
    if not match:
        raise RowError(f"column {column!r}: {value!r} is not WIDTHxHEIGHT")
    return int(match.group(1)), int(match.group(2))


def resolve_under(root: Path, relative: str, *prefixes: str) -> Path:
    """``root/relative``, else ``root/prefix/relative`` for the first prefix where it exists.

    Catalogues store paths relative to a dataset root whose exact level varies
    between releases (``videos/group_0001/x.mp4`` vs ``group_0001/x.mp4``).
    Returns the plain ``root/relative`` when none exists, so the caller's
    "missing file" message names the canonical place.
    """
    if not relative:
        raise RowError("empty path")
    direct = root / relative
    if direct.exists():
        return direct
    for prefix in prefixes:
        candidate = root / prefix / relative
        if candidate.exists():
            return candidate
    return direct


def _report(source: str, errors: BadRows | None, source_id: str, reason: str) -> None:
    if errors is None:
        raise ManifestError(f"{source} row {source_id!r}: {reason}")
    errors.append((source_id, reason))


def collect_rows(
    source: str,
    records: Iterable[Mapping[str, Any]],
    source_id_of: Callable[[Mapping[str, Any]], str],
    map_row: Callable[[Mapping[str, Any]], dict[str, Any] | list[dict[str, Any]]],
    errors: BadRows | None,
) -> pd.DataFrame:
    """Map catalogue records to a validated manifest, routing bad rows through ``errors``.

    ``map_row`` returns one manifest row dict (or several, for a record that
    holds several clips) without ``source``/``clip_id``; ``clip_id`` is derived
    from ``source_id`` unless given. It raises :class:`RowError`, ``OSError``,
    ``KeyError`` or ``ValueError`` for a row it cannot map. Rows that break the
    manifest contract (negative span or size) and repeated clip ids are bad rows
    too, so the returned frame always passes :func:`~wmkit.manifests.schema.validate`.
    """
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for record in records:
        source_id = str(source_id_of(record))
        try:
            mapped = map_row(record)
            rows = mapped if isinstance(mapped, list) else [mapped]
            for row in rows:
                row.setdefault("source_id", source_id)
                row.setdefault("clip_id", sanitize_clip_id(row["source_id"]))
                _check_contract(row)
        except (RowError, ManifestError, OSError, KeyError, ValueError) as err:
            _report(source, errors, source_id, _reason(err))
            continue
        for row in rows:
            if row["clip_id"] in seen:
                _report(source, errors, row["source_id"], f"duplicate clip_id {row['clip_id']!r}")
                continue
            seen.add(row["clip_id"])
            out.append({"source": source, **row})
    if not out:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in DTYPES.items()})[list(COLUMNS)]
    return to_manifest(out)


def _check_contract(row: Mapping[str, Any]) -> None:
    if not (row["end_s"] >= row["start_s"] >= 0):
        raise RowError(f"bad span start_s={row['start_s']} end_s={row['end_s']}")
    for name in ("fps", "width", "height", "num_frames"):
        if row[name] < 0:
            raise RowError(f"negative {name} {row[name]}")


def _reason(err: Exception) -> str:
    if isinstance(err, KeyError):
        return f"missing field {err.args[0]!r}"
    return str(err)
