"""Write samples into webdataset shards: temporary name first, published when complete.

Lifecycle of one shard::

    write() ... write()            {prefix}-000007.tar.tmp grows (never the final name)
    limit reached / close()        tar finished, fsync, os.replace -> {prefix}-000007.tar,
                                   index.parquet rewritten atomically, on_publish called
    exception escapes `with`       the .tmp is deleted; nothing of that shard is published

Shards published earlier in the same run stay published (they are complete and
indexed), which is what lets an interrupted ingest resume. Bytes are
deterministic: members sorted by name, mtime 0, uid/gid 0, empty user/group
names, mode 0o444, so the same samples in the same order give byte-identical
shards. One writer per (directory, prefix) at a time: opening a writer deletes
stale ``{prefix}-*.tar.tmp`` files left by a killed run.
"""

from __future__ import annotations

import glob
import io
import os
import tarfile
from typing import Callable

import pandas as pd

from wmkit.datasets.sample import Sample, SampleError
from wmkit.datasets.shard_format import (
    INDEX_FILE,
    empty_index,
    read_index,
    sample_sha256,
    shard_name,
    shard_number,
    write_index,
)

__all__ = ["ShardWriter"]

#: tarfile pads a finished archive with two zero blocks, then up to a whole record.
_RECORD = tarfile.RECORDSIZE
_END_BLOCKS = 2 * tarfile.BLOCKSIZE


def _tar_file_size(member_bytes: int) -> int:
    """Final size of a tar whose members take ``member_bytes`` (end blocks + record padding)."""
    return -(-(member_bytes + _END_BLOCKS) // _RECORD) * _RECORD


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    """A member header with every varying field pinned, for byte-identical shards."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class ShardWriter:
    """Context manager writing :class:`Sample` objects into ``{prefix}-{index:06d}.tar`` shards.

    Args:
        out_dir: shard directory (created); existing shards and index rows are kept,
            new shards take the next free index.
        prefix: shard file name prefix.
        max_count: at most this many samples per shard.
        max_bytes: a shard's file size stays within this, unless one sample alone is larger.
        on_publish: called as ``on_publish(shard_name, keys)`` after each shard is published.

    Example::

        with ShardWriter("shards/", max_count=500) as writer:
            for sample in samples:
                writer.write(sample)
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        prefix: str = "shard",
        max_count: int = 1000,
        max_bytes: int = 1 << 30,
        on_publish: Callable[[str, list[str]], None] | None = None,
    ) -> None:
        if max_count < 1 or max_bytes < 1:
            raise ValueError(f"max_count ({max_count}) and max_bytes ({max_bytes}) must be positive")
        self.out_dir = os.fspath(out_dir)
        self.prefix, self.max_count, self.max_bytes = prefix, max_count, max_bytes
        self.on_publish = on_publish
        os.makedirs(self.out_dir, exist_ok=True)
        for stale in glob.glob(os.path.join(glob.escape(self.out_dir), f"{glob.escape(prefix)}-*.tar.tmp")):
            os.remove(stale)
        has_index = os.path.exists(os.path.join(self.out_dir, INDEX_FILE))
        self._index = read_index(self.out_dir) if has_index else empty_index()
        self._keys: dict[str, str] = dict(zip(self._index["key"], self._index["shard"]))
        taken = [shard_number(n, prefix) for n in [*os.listdir(self.out_dir), *self._index["shard"]]]
        self._next_number = max((n for n in taken if n is not None), default=-1) + 1
        self._file: io.BufferedWriter | None = None
        self._tar: tarfile.TarFile | None = None
        self._rows: list[dict] = []
        self.published: list[str] = []

    @property
    def _shard(self) -> str:
        return shard_name(self.prefix, self._next_number)

    @property
    def _tmp_path(self) -> str:
        return os.path.join(self.out_dir, self._shard + ".tmp")

    def write(self, sample: Sample) -> str:
        """Validate and append ``sample``; return the name of the shard it goes into.

        Raises :class:`SampleError` naming the key (bad sample, duplicate key)
        before anything is written, so a rejected sample leaves no trace.
        """
        sample.validate()
        if sample.key in self._keys:
            raise SampleError(f"sample {sample.key}: duplicate key (already in {self._keys[sample.key]})")
        members = sample.to_members()
        infos = [_tarinfo(f"{sample.key}.{name}", len(members[name])) for name in sorted(members)]
        size = sum(self._header_size(info) + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE for info in infos)
        if self._rows and (
            len(self._rows) >= self.max_count or _tar_file_size(self._member_bytes + size) > self.max_bytes
        ):
            self._publish()
        if self._tar is None:
            self._file = open(self._tmp_path, "wb")
            self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)
        offset = self._tar.offset
        for info in infos:
            self._tar.addfile(info, io.BytesIO(members[info.name.partition(".")[2]]))
        self._rows.append(
            {
                "key": sample.key,
                "shard": self._shard,
                "offset": offset,
                "bytes": self._tar.offset - offset,
                "sha256": sample_sha256(members),
                "num_frames": sample.num_frames,
            }
        )
        self._keys[sample.key] = self._shard
        return self._shard

    @property
    def _member_bytes(self) -> int:
        return self._tar.offset if self._tar is not None else 0

    def _header_size(self, info: tarfile.TarInfo) -> int:
        return len(info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape"))

    def _publish(self) -> None:
        """Finish the open shard, rename it into place, extend the index, notify."""
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._tar = self._file = None
        os.replace(self._tmp_path, os.path.join(self.out_dir, self._shard))
        rows = pd.DataFrame(self._rows)
        self._index = pd.concat([self._index, rows.astype(self._index.dtypes.to_dict())], ignore_index=True)
        write_index(self._index, self.out_dir)
        shard, keys = self._shard, [r["key"] for r in self._rows]
        self.published.append(shard)
        self._rows = []
        self._next_number += 1
        if self.on_publish is not None:
            self.on_publish(shard, keys)

    def close(self) -> None:
        """Publish the open shard, if it holds any sample."""
        if self._rows:
            self._publish()

    def abort(self) -> None:
        """Drop the open shard: close and delete its ``.tmp``; published shards stay."""
        if self._file is not None:
            self._file.close()
            os.remove(self._tmp_path)
        for key in (r["key"] for r in self._rows):
            del self._keys[key]
        self._tar = self._file = None
        self._rows = []

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
