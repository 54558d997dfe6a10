"""wmkit.train: flow-matching training of the GDN DiT straight from shards (see README.md).

    from wmkit.train.config import run_preset
    from wmkit.train.trainer import train

    rows = train(run_preset("tiny_cpu", shards="shards/", out="runs/tiny"))
"""
