"""Check and summarise a shard directory through its ``index.parquet``.

- :func:`verify_shards`: every listed tar exists and every tar is listed; every
  sample's offset, span, sha256 and frame count match the index; its members
  parse, its cameras validate and their T equals the json ``num_frames``
  (optionally: equals the decoded mp4's frame count). Each problem names the
  shard and the sample.
- :func:`shard_stats`: samples, frames, hours and bytes, per source and in total.
- :func:`read_sample`: random access to one sample by key through its offset.
"""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile
from dataclasses import dataclass, field

import pandas as pd

from wmkit.datasets.sample import Sample, SampleError
from wmkit.datasets.shard_format import ShardFormatError, iter_tar_samples, read_index, sample_sha256

__all__ = ["VerifyReport", "read_index", "read_sample", "shard_stats", "verify_shards"]


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_shards`: counts and one line per problem."""

    root: str
    shards: int = 0
    samples: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def summary(self) -> str:
        """One line: counts and OK/FAILED."""
        state = "OK" if self.ok else f"FAILED ({len(self.problems)} problems)"
        return f"{self.root}: {self.shards} shards, {self.samples} samples checked: {state}"


def verify_shards(root: str | os.PathLike, *, check_video: bool = False) -> VerifyReport:
    """Check a shard directory against its index; collect every problem instead of stopping.

    Args:
        root: the shard directory (holding ``index.parquet`` and ``*.tar``).
        check_video: also decode each mp4 and compare its frame count with the cameras.
    """
    root = os.fspath(root)
    report = VerifyReport(root)
    try:
        index = read_index(root)
    except (ShardFormatError, OSError, ValueError) as err:
        report.problems.append(str(err))
        return report
    for key in index["key"][index["key"].duplicated()]:
        report.problems.append(f"index: key {key} is listed more than once")
    on_disk = {os.path.basename(p) for p in glob.glob(os.path.join(glob.escape(root), "*.tar"))}
    listed = set(index["shard"])
    for shard in sorted(on_disk - listed):
        report.problems.append(f"{shard}: tar is not listed in the index")
    for shard in sorted(listed - on_disk):
        report.problems.append(f"{shard}: listed in the index but missing on disk")
    for shard in sorted(listed & on_disk):
        rows = index[index["shard"] == shard].set_index("key")
        report.shards += 1
        seen: set[str] = set()
        try:
            with open(os.path.join(root, shard), "rb") as f:
                for raw in iter_tar_samples(f, shard):
                    report.samples += 1
                    seen.add(raw.key)
                    report.problems.extend(_check_sample(raw, rows, check_video))
        except ShardFormatError as err:
            report.problems.append(str(err))
        for key in sorted(set(rows.index) - seen):
            report.problems.append(f"{shard}: sample {key} is in the index but not in the tar")
    return report


def _check_sample(raw, rows: pd.DataFrame, check_video: bool) -> list[str]:
    """Problems of one raw sample against its index rows (empty list when fine)."""
    where = f"{raw.shard}: sample {raw.key}"
    if raw.key not in rows.index:
        return [f"{where} is not in the index"]
    row = rows.loc[raw.key]
    problems = []
    if (row["offset"], row["bytes"]) != (raw.offset, raw.size):
        problems.append(f"{where}: index says offset {row['offset']} bytes {row['bytes']}, tar has {raw.offset} {raw.size}")
    if sample_sha256(raw.members) != row["sha256"]:
        problems.append(f"{where}: sha256 mismatch (corrupt member bytes)")
    try:
        sample = Sample.from_members(raw.key, raw.members)
    except SampleError as err:
        return [*problems, f"{raw.shard}: {err}"]
    if sample.num_frames != row["num_frames"]:
        problems.append(f"{where}: index num_frames {row['num_frames']} != cameras T {sample.num_frames}")
    if check_video:
        from wmkit.datasets.video import decode_mp4_bytes

        try:
            decoded = len(decode_mp4_bytes(sample.mp4, f"{where}.mp4"))
        except ValueError as err:
            return [*problems, f"{where}: mp4 does not decode ({err})"]
        if decoded != sample.num_frames:
            problems.append(f"{where}: mp4 has {decoded} frames, cameras have {sample.num_frames}")
    return problems


def read_sample(root: str | os.PathLike, key: str) -> Sample:
    """Read one sample by key: seek to its index offset and parse only its bytes."""
    index = read_index(root)
    rows = index[index["key"] == key]
    if rows.empty:
        raise KeyError(f"{os.fspath(root)}: no sample {key} in the index")
    row = rows.iloc[0]
    with open(os.path.join(os.fspath(root), row["shard"]), "rb") as f:
        f.seek(int(row["offset"]))
        span = f.read(int(row["bytes"])) + bytes(2 * tarfile.BLOCKSIZE)  # + end-of-archive
    raws = list(iter_tar_samples(io.BytesIO(span), row["shard"]))
    if len(raws) != 1 or raws[0].key != key:
        raise ShardFormatError(f"{row['shard']}: offset {row['offset']} does not hold sample {key}")
    return Sample.from_members(key, raws[0].members)


def shard_stats(root: str | os.PathLike) -> pd.DataFrame:
    """Samples, frames, hours and bytes per source plus a ``total`` row.

    Frames and bytes come from the index; source and fps from each sample's
    ``json`` (the other members are skipped by seeking, not read).
    """
    root = os.fspath(root)
    index = read_index(root).set_index("key")
    records = []
    for shard in sorted(set(index["shard"])):
        with tarfile.open(os.path.join(root, shard), mode="r:") as tar:
            for info in tar:
                key, _, member = info.name.partition(".")
                if member == "json":
                    meta = json.loads(tar.extractfile(info).read())
                    records.append({"key": key, "source": meta["source"], "fps": float(meta["fps"])})
    df = pd.DataFrame.from_records(records, columns=["key", "source", "fps"]).set_index("key").join(index, how="inner")
    df["hours"] = df["num_frames"] / df["fps"] / 3600.0
    per_source = df.groupby("source").agg(
        samples=("shard", "size"), frames=("num_frames", "sum"), hours=("hours", "sum"), bytes=("bytes", "sum")
    )
    per_source.loc["total"] = per_source.sum()
    return per_source.astype({"samples": "int64", "frames": "int64", "bytes": "int64"})
