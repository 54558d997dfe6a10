"""Shard write/read throughput against raw sequential reads of the same tar files.

Usage::

    python bench/shards.py                      # 720p clips, writes bench/results/shards.json
    python bench/shards.py --samples 40 --quick # smaller run for a smoke check

What is timed (page cache warm for every read, so raw and shard reads are compared
on the same footing):

- write: ``ShardWriter`` over pre-encoded 720p H.264 clips (cameras npz, json,
  sha256 and tar framing included; video encoding is not: ingest pays that once);
- raw read: plain ``open().read()`` of every tar, 8 MiB chunks;
- shard read: ``ShardDataset(decode="mp4")`` through a ``DataLoader`` with 1 and 2
  workers, every sample's members parsed (cameras npz and json decoded);
- decode (reported, not part of the goal): ``decode="frames"`` with 2 workers.

Goal (issue 3): shard read >= 50 % of raw read speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from wmkit.datasets.sample import Sample
from wmkit.datasets.shard_reader import ShardDataset
from wmkit.datasets.shard_writer import ShardWriter
from wmkit.datasets.synthetic import render_room_clip
from wmkit.datasets.video import decode_mp4_bytes, encode_mp4

RESULTS = Path(__file__).parent / "results"


def make_clips(num_distinct: int, num_frames: int, fps: float) -> list[tuple[bytes, object]]:
    """Render and encode ``num_distinct`` 1280x720 clips with film-grain noise (realistic bitrates)."""
    clips = []
    for seed in range(num_distinct):
        clip = render_room_clip(seed, num_frames=num_frames, width=1280, height=720, fps=fps)
        rng = np.random.default_rng(seed)
        grain = rng.normal(0.0, 4.0, clip.frames.shape)
        frames = np.clip(clip.frames + grain, 0, 255).astype(np.uint8)
        clips.append((encode_mp4(frames, fps=fps, crf=20, preset="veryfast"), clip.cameras))
    return clips


def write_shards(out: Path, clips: list, num_samples: int) -> float:
    """Write ``num_samples`` samples cycling over ``clips``; return seconds."""
    start = time.perf_counter()
    with ShardWriter(out, max_bytes=256 << 20) as writer:
        for i in range(num_samples):
            mp4, cameras = clips[i % len(clips)]
            meta = {"source": "local", "source_id": f"bench{i}", "caption": "", "license": "bench",
                    "fps": float(1.0 / cameras.t[1]), "size": [1280, 720], "num_frames": len(cameras),
                    "provenance": {"wmkit": "bench/shards.py"}}
            writer.write(Sample(key=f"bench{i:05d}", mp4=mp4, cameras=cameras, meta=meta))
    return time.perf_counter() - start


def raw_read(tars: list[Path]) -> float:
    """Sequentially read every tar with plain file reads; return seconds."""
    start = time.perf_counter()
    for path in tars:
        with open(path, "rb", buffering=0) as f:
            while f.read(8 << 20):
                pass
    return time.perf_counter() - start


def shard_read(out: Path, workers: int, decode: str = "mp4") -> tuple[float, int]:
    """Iterate every sample once through a DataLoader; return (seconds, samples)."""
    dataset = ShardDataset(str(out), decode=decode)
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=lambda s: s,
                        persistent_workers=False)
    start = time.perf_counter()
    count = sum(1 for _ in loader)
    return time.perf_counter() - start, count


def median_of(fn, repeats: int):
    """Run ``fn`` ``repeats`` times; return the median of its first result (and the last extras)."""
    runs = [fn() for _ in range(repeats)]
    first = [r[0] if isinstance(r, tuple) else r for r in runs]
    return statistics.median(first), runs[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=160, help="samples written (cycled over distinct clips)")
    parser.add_argument("--distinct", type=int, default=4, help="distinct 720p clips rendered and encoded")
    parser.add_argument("--frames", type=int, default=48, help="frames per clip")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="skip the frame-decode measurement")
    parser.add_argument("--out", type=Path, default=RESULTS / "shards.json")
    args = parser.parse_args()

    fps = 16.0
    clips = make_clips(args.distinct, args.frames, fps)
    assert decode_mp4_bytes(clips[0][0]).shape == (args.frames, 720, 1280, 3)  # correctness before speed
    tmp = Path(tempfile.mkdtemp(prefix="wmkit-bench-shards-"))
    try:
        write_s = []
        for r in range(args.repeats):
            out = tmp / f"run{r}"
            write_s.append(write_shards(out, clips, args.samples))
        out = tmp / "run0"
        tars = sorted(out.glob("*.tar"))
        total_bytes = sum(p.stat().st_size for p in tars)
        mb = total_bytes / 1e6
        raw_read(tars)  # warm the page cache once for every read below
        raw_s, _ = median_of(lambda: raw_read(tars), args.repeats)
        reads = {}
        for workers in (1, 2):
            sec, (_, count) = median_of(lambda: shard_read(out, workers), args.repeats)
            assert count == args.samples, f"reader returned {count} of {args.samples} samples"
            reads[workers] = sec
        decode = None
        if not args.quick:
            decode_s, (_, count) = median_of(lambda: shard_read(out, 2, "frames"), 1)
            decode = {"samples_per_s": count / decode_s, "frames_per_s": count * args.frames / decode_s}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    write_med = statistics.median(write_s)
    best_read = max(mb / reads[1], mb / reads[2])
    result = {
        "summary": {
            "read_MBps": round(best_read, 1),
            "write_MBps": round(mb / write_med, 1),
            "read_fraction_of_raw": round(best_read / (mb / raw_s), 3),
            "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (CPU only)",
        },
        "setup": {"samples": args.samples, "distinct_clips": args.distinct, "frames_per_clip": args.frames,
                  "resolution": "1280x720", "fps": fps, "shards": len(tars), "total_MB": round(mb, 1),
                  "mean_sample_MB": round(mb / args.samples, 3), "repeats": args.repeats,
                  "torch": torch.__version__, "python": platform.python_version(), "page_cache": "warm"},
        "write": {"MBps": round(mb / write_med, 1), "samples_per_s": round(args.samples / write_med, 1)},
        "raw_read": {"MBps": round(mb / raw_s, 1)},
        "read": {f"workers_{w}": {"MBps": round(mb / s, 1), "samples_per_s": round(args.samples / s, 1),
                                  "fraction_of_raw": round(raw_s / s, 3)} for w, s in reads.items()},
        "decode_frames_workers_2": decode and {k: round(v, 1) for k, v in decode.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    rows = [("write", result["write"]["MBps"], result["write"]["samples_per_s"], "")]
    rows.append(("raw sequential read", result["raw_read"]["MBps"], "", "1.00"))
    for w in (1, 2):
        r = result["read"][f"workers_{w}"]
        rows.append((f"shard read, {w} worker{'s' * (w > 1)}", r["MBps"], r["samples_per_s"], f"{r['fraction_of_raw']:.2f}"))
    if decode:
        rows.append(("read + decode frames, 2 workers", "", f"{decode['samples_per_s']:.1f}", ""))
    table = ["| step | MB/s | samples/s | of raw |", "|---|---|---|---|"]
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    (args.out.with_suffix(".md")).write_text("\n".join(table) + "\n")
    print("\n".join(table))
    print(f"summary: {json.dumps(result['summary'])}")


if __name__ == "__main__":
    main()
