"""On-disk shard format shared by the writer, the reader and the verifier (DESIGN §2).

A shard directory holds ``{prefix}-{index:06d}.tar`` files and one ``index.parquet``::

    shards/
      shard-000000.tar   key0.cameras.npz key0.json key0.mp4 key1.cameras.npz ...
      shard-000001.tar
      index.parquet      one row per sample: INDEX_DTYPES

Index columns:

- ``key``: the sample key (``__key__``), unique in the directory;
- ``shard``: the tar's file name, relative to the directory;
- ``offset``: byte offset in the tar of the sample's first member header
  (a pax extended header when the member name needs one);
- ``bytes``: the sample's span in the tar, headers and padding included, so
  ``offset + bytes`` is where the next sample starts;
- ``sha256``: :func:`sample_sha256` of the sample's members;
- ``num_frames``: frame count T of the clip.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from dataclasses import dataclass
from typing import IO, Iterator

import pandas as pd

__all__ = [
    "INDEX_DTYPES",
    "INDEX_FILE",
    "RawSample",
    "ShardFormatError",
    "empty_index",
    "iter_tar_samples",
    "read_index",
    "sample_sha256",
    "shard_name",
    "shard_number",
    "write_index",
]

INDEX_FILE = "index.parquet"
INDEX_DTYPES: dict[str, str] = {
    "key": "string",
    "shard": "string",
    "offset": "int64",
    "bytes": "int64",
    "sha256": "string",
    "num_frames": "int64",
}


class ShardFormatError(ValueError):
    """A shard or index that breaks the format; the message names the file and sample."""


def shard_name(prefix: str, index: int) -> str:
    """``shard_name("shard", 3) == "shard-000003.tar"``."""
    return f"{prefix}-{index:06d}.tar"


def shard_number(name: str, prefix: str) -> int | None:
    """The index in a ``{prefix}-{index:06d}.tar`` name, or None for another name."""
    match = re.fullmatch(rf"{re.escape(prefix)}-(\d{{6,}})\.tar", name)
    return int(match.group(1)) if match else None


def sample_sha256(members: dict[str, bytes]) -> str:
    """Hex sha256 of a sample: its member bytes concatenated in ascending member-name order.

    Member names are the suffixes after ``{key}.`` (``cameras.npz``, ``json``,
    ``mp4``, ...); names are not hashed, only the bytes, in ``sorted(members)``
    order, which is also the order the writer stores them in the tar.
    """
    digest = hashlib.sha256()
    for name in sorted(members):
        digest.update(members[name])
    return digest.hexdigest()


@dataclass(frozen=True)
class RawSample:
    """A sample's undecoded members as read from a tar, with where it sits in the file."""

    key: str
    shard: str  # path or name of the tar it came from
    offset: int  # byte offset of its first member header
    size: int  # bytes spanned in the tar, headers and padding included
    members: dict[str, bytes]


def iter_tar_samples(fileobj: IO[bytes], shard: str) -> Iterator[RawSample]:
    """Stream a shard tar, grouping consecutive members ``{key}.{member}`` into samples.

    ``fileobj`` is read sequentially (pipes work). Raises :class:`ShardFormatError`
    naming ``shard`` for a non-file member, a name without a dot, or a sample whose
    members are not contiguous (a key that reappears later).
    """
    seen: set[str] = set()
    key, offset, end, members = None, 0, 0, {}
    # A seekable file is read member by member with one read() each; tarfile's stream
    # mode ("r|", needed for pipes) copies through 10 KiB records and is ~3x slower.
    seekable = fileobj.seekable()
    try:
        with tarfile.open(fileobj=fileobj, mode="r:" if seekable else "r|") as tar:
            for info in tar:
                if not info.isfile():
                    raise ShardFormatError(f"{shard}: member {info.name!r} is not a regular file")
                member_key, dot, member = info.name.partition(".")
                if not dot or not member_key:
                    raise ShardFormatError(f"{shard}: member {info.name!r} is not named {{key}}.{{member}}")
                if member_key != key:
                    if key is not None:
                        yield RawSample(key, shard, offset, end - offset, members)
                    if member_key in seen:
                        raise ShardFormatError(f"{shard}: sample {member_key} is split across the tar")
                    seen.add(member_key)
                    key, offset, members = member_key, info.offset, {}
                if member in members:
                    raise ShardFormatError(f"{shard}: sample {key} has member {member!r} twice")
                if seekable:
                    fileobj.seek(info.offset_data)
                    members[member] = fileobj.read(info.size)
                else:
                    members[member] = tar.extractfile(info).read()
                end = info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    except tarfile.TarError as err:
        raise ShardFormatError(f"{shard}: unreadable tar after sample {key} ({err})") from err
    if key is not None:
        yield RawSample(key, shard, offset, end - offset, members)


def read_index(root: str | os.PathLike) -> pd.DataFrame:
    """Read ``root/index.parquet`` (or an index file path) with :data:`INDEX_DTYPES`."""
    path = os.fspath(root)
    if os.path.isdir(path):
        path = os.path.join(path, INDEX_FILE)
    if not os.path.exists(path):
        raise ShardFormatError(f"{path}: no shard index")
    df = pd.read_parquet(path)
    missing = [c for c in INDEX_DTYPES if c not in df.columns]
    if missing:
        raise ShardFormatError(f"{path}: index is missing columns {missing}")
    return df[list(INDEX_DTYPES)].astype(INDEX_DTYPES)


def empty_index() -> pd.DataFrame:
    """An index with no rows and the right dtypes."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in INDEX_DTYPES.items()})


def write_index(df: pd.DataFrame, root: str | os.PathLike) -> None:
    """Write ``root/index.parquet`` atomically (temporary file, then ``os.replace``)."""
    path = os.path.join(os.fspath(root), INDEX_FILE)
    tmp = path + ".tmp"
    df[list(INDEX_DTYPES)].astype(INDEX_DTYPES).reset_index(drop=True).to_parquet(tmp, index=False)
    os.replace(tmp, path)
