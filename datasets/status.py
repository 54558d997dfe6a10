"""The per-item status table beside a shard directory (``status.parquet``), and resume from it.

Every stage that turns items into shards (``ingest``, ``annotate``, ``render``)
keeps one row per sample key::

    clip_id   status   stage    reason               shard              finished_at
    a         done                                   shard-000000.tar   ...
    b         failed   decode   "clip b: ..."                           ...

"done" is written only after the sample's shard is published (``on_publish``
of :class:`~wmkit.datasets.shard_writer.ShardWriter`), so a crash never marks
a key done that is not on disk; ``index.parquet`` stays the record of what is
done, and :meth:`StatusTable.resume` repairs a table that missed a publish.
"""

from __future__ import annotations

import os

import pandas as pd

from wmkit.datasets.shard_format import INDEX_FILE, read_index

__all__ = ["STATUS_DTYPES", "STATUS_FILE", "StatusTable", "read_status", "status_summary"]

STATUS_FILE = "status.parquet"
STATUS_DTYPES: dict[str, str] = {
    "clip_id": "string",  # the sample key
    "status": "string",  # "done" | "failed"
    "stage": "string",  # failing stage ("" when done)
    "reason": "string",  # error message ("" when done)
    "shard": "string",  # shard holding the sample ("" when failed)
    "finished_at": "datetime64[ns, UTC]",
}


def read_status(out_dir: str | os.PathLike) -> pd.DataFrame:
    """``out_dir/status.parquet`` with :data:`STATUS_DTYPES` (empty when absent)."""
    path = os.path.join(os.fspath(out_dir), STATUS_FILE)
    if not os.path.exists(path):
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in STATUS_DTYPES.items()})
    return pd.read_parquet(path).astype(STATUS_DTYPES)


class StatusTable:
    """Status rows keyed by sample key for ``out_dir``, written atomically on every change of record."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.out_dir = os.fspath(out_dir)
        self.path = os.path.join(self.out_dir, STATUS_FILE)
        self.rows = {r["clip_id"]: r for r in read_status(self.out_dir).to_dict("records")}

    def set(self, key: str, status: str, stage: str = "", reason: str = "", shard: str = "") -> None:
        """Record ``key``'s outcome (in memory; :meth:`save` writes it)."""
        now = pd.Timestamp.now(tz="UTC")
        self.rows[key] = dict(clip_id=key, status=status, stage=stage, reason=reason, shard=shard, finished_at=now)

    def frame(self) -> pd.DataFrame:
        """The table as a frame with :data:`STATUS_DTYPES`."""
        df = pd.DataFrame.from_records(list(self.rows.values()), columns=list(STATUS_DTYPES))
        return df.astype(STATUS_DTYPES)

    def save(self) -> None:
        """Write ``status.parquet`` under a temporary name, then rename it into place."""
        tmp = self.path + ".tmp"
        self.frame().to_parquet(tmp, index=False)
        os.replace(tmp, self.path)

    def resume(self, retry_failed: bool) -> set[str]:
        """Keys a new run skips: every key in ``index.parquet`` and, unless ``retry_failed``, every failed key.

        Keys published but not yet recorded (a crash between the two) are marked done here.
        """
        done: dict[str, str] = {}
        if os.path.exists(os.path.join(self.out_dir, INDEX_FILE)):
            index = read_index(self.out_dir)
            done = dict(zip(index["key"], index["shard"]))
        for key, shard in done.items():
            if self.rows.get(key, {}).get("status") != "done":
                self.set(key, "done", shard=shard)
        failed = {k for k, r in self.rows.items() if r["status"] == "failed"}
        return set(done) if retry_failed else set(done) | failed

    def on_publish(self, shard: str, keys: list[str]) -> None:
        """:class:`ShardWriter` callback: the keys of a just-published shard are done; saved at once."""
        for key in keys:
            self.set(key, "done", shard=shard)
        self.save()


def status_summary(status: pd.DataFrame) -> str:
    """Counts of done/failed items, then one line per failure: key, stage, reason."""
    counts = status["status"].value_counts()
    lines = [f"done: {int(counts.get('done', 0))}  failed: {int(counts.get('failed', 0))}"]
    for row in status[status["status"] == "failed"].itertuples(index=False):
        lines.append(f"  {row.clip_id} [{row.stage}] {row.reason}")
    return "\n".join(lines)
