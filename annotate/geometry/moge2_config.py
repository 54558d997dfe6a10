"""MoGe-2 configuration: dataclasses for the encoder, the conv stacks and the whole model.

The fields mirror the ``model_config`` dict that the official MoGe-2 checkpoints
(``model.pt`` of ``Ruicheng/moge-2-vit{s,b,l}[-normal]``, microsoft/MoGe
``moge/model/v2.py``) carry beside their weights, so :func:`MoGe2Config.from_upstream`
reads that dict and :meth:`MoGe2Config.to_upstream` writes it back. Presets:
``vitl`` (the published ViT-L metric-scale model, with or without the normal
head) and ``tiny`` (a few thousand parameters for CPU tests).

The decoder is a five-level pyramid. Level 0 is the ViT token grid (h x w);
each later level doubles it, so level 4 is 16 h x 16 w, then the outputs are
resized to the input image::

    level   0        1         2         3         4
    grid    h x w    2h x 2w   4h x 4w   8h x 8w   16h x 16w
    neck    C0   ->  C1    ->  C2    ->  C3    ->  C4     (C = dim_res_blocks)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from wmkit.annotate.geometry.dinov2 import DinoV2Config, vit_large

__all__ = ["EncoderConfig", "ConvStackConfig", "MoGe2Config", "VIT_ARCHS", "RESAMPLERS", "REMAPS"]

NUM_LEVELS = 5  # decoder pyramid levels: the token grid and four 2x upsamplings
UV_CHANNELS = 2  # each level is given the normalised view-plane (u, v) of its pixels
RESAMPLERS = ("conv_transpose", "bilinear")  # the 2x upsamplers the MoGe-2 checkpoints use
REMAPS = ("linear", "exp", "sinh", "sinh_exp")  # raw head output -> point map (MoGe-2 uses "exp")

# DINOv2 backbone names as the upstream config spells them -> ViT sizes (torch hub dinov2).
VIT_ARCHS: dict[str, dict[str, int]] = {
    "dinov2_vits14": dict(embed_dim=384, depth=12, num_heads=6),
    "dinov2_vitb14": dict(embed_dim=768, depth=12, num_heads=12),
    "dinov2_vitl14": dict(embed_dim=1024, depth=24, num_heads=16),
}


@dataclass(frozen=True)
class EncoderConfig:
    """The DINOv2 ViT (:class:`DinoV2Config`) and how its intermediate layers feed the decoder."""

    vit: DinoV2Config = field(default_factory=vit_large)  # dinov2_vitl14: no registers, pos_embed offset 0.1
    intermediate_layers: tuple[int, ...] = (5, 11, 17, 23)  # blocks whose (normed) tokens are projected and summed
    dim_out: int = 1024  # channels of the projected token grid (decoder level 0)
    backbone: str = "dinov2_vitl14"  # upstream name, kept for round trips to the upstream config

    def __post_init__(self) -> None:
        object.__setattr__(self, "intermediate_layers", tuple(int(i) for i in self.intermediate_layers))
        bad = [i for i in self.intermediate_layers if not 0 <= i < self.vit.depth]
        if not self.intermediate_layers or bad:
            raise ValueError(f"EncoderConfig: intermediate_layers {list(self.intermediate_layers)} must be in [0, {self.vit.depth})")
        if self.vit.num_register_tokens or self.dim_out <= 0:
            raise ValueError(f"EncoderConfig: MoGe-2 uses a ViT without registers and dim_out > 0, got {self}")


@dataclass(frozen=True)
class ConvStackConfig:
    """One pyramid of residual conv blocks (the neck or a head), one entry per level.

    ``dim_in[i]``: channels added into level i through a 1x1 conv (None: that
    level takes no input); ``dim_out[i]``: a 1x1 conv on level i's output
    (None: the features pass through); ``num_res_blocks[i]``: residual blocks
    at level i; ``resamplers[i]`` upsamples level i to level i + 1.
    """

    dim_in: tuple[int | None, ...]
    dim_res_blocks: tuple[int, ...]
    dim_out: tuple[int | None, ...]
    num_res_blocks: tuple[int, ...]
    resamplers: tuple[str, ...]

    def __post_init__(self) -> None:
        for name in ("dim_in", "dim_res_blocks", "dim_out", "num_res_blocks", "resamplers"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        n = len(self.dim_res_blocks)
        lengths = {"dim_in": len(self.dim_in), "dim_out": len(self.dim_out), "num_res_blocks": len(self.num_res_blocks)}
        if any(v != n for v in lengths.values()) or len(self.resamplers) != n - 1:
            raise ValueError(
                f"ConvStackConfig: {n} levels in dim_res_blocks but lengths {lengths} and "
                f"{len(self.resamplers)} resamplers (need {n - 1})"
            )
        bad = [r for r in self.resamplers if r not in RESAMPLERS]
        if bad:
            raise ValueError(f"ConvStackConfig: unsupported resamplers {bad}; supported: {list(RESAMPLERS)}")

    @classmethod
    def from_upstream(cls, cfg: dict[str, Any], where: str) -> "ConvStackConfig":
        """Read an upstream ``ConvStack`` kwargs dict (scalars broadcast to every level)."""
        unsupported = {
            k: cfg[k]
            for k, default in (("res_block_in_norm", "none"), ("res_block_hidden_norm", "none"),
                               ("activation", "relu"), ("dim_times_res_block_hidden", 1))
            if cfg.get(k, default) != default
        }
        if unsupported:
            raise ValueError(f"{where}: unsupported conv-stack options {unsupported} (MoGe-2 uses no norms, relu, hidden x1)")
        n = len(cfg["dim_res_blocks"])

        def per_level(value: Any, count: int) -> list:
            return list(value) if isinstance(value, (list, tuple)) else [value] * count

        return cls(
            dim_in=per_level(cfg["dim_in"], n),
            dim_res_blocks=cfg["dim_res_blocks"],
            dim_out=per_level(cfg["dim_out"], n),
            num_res_blocks=per_level(cfg.get("num_res_blocks", 1), n),
            resamplers=per_level(cfg["resamplers"], n - 1),
        )

    def to_upstream(self) -> dict[str, Any]:
        """The upstream ``ConvStack`` kwargs dict for this stack."""
        return {
            "dim_in": list(self.dim_in), "dim_out": list(self.dim_out), "dim_res_blocks": list(self.dim_res_blocks),
            "num_res_blocks": list(self.num_res_blocks), "res_block_in_norm": "none",
            "res_block_hidden_norm": "none", "resamplers": list(self.resamplers),
        }


def _head(dims: tuple[int, ...], out_channels: int) -> ConvStackConfig:
    return ConvStackConfig(
        dim_in=dims, dim_res_blocks=dims, dim_out=(None,) * (len(dims) - 1) + (out_channels,),
        num_res_blocks=(0,) + (1,) * (len(dims) - 2) + (0,), resamplers=("conv_transpose",) * (len(dims) - 2) + ("bilinear",),
    )


@dataclass(frozen=True)
class MoGe2Config:
    """The whole MoGe-2 network: encoder, shared neck, heads and output remapping."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    neck: ConvStackConfig = field(default_factory=lambda: ConvStackConfig(
        dim_in=(1024 + UV_CHANNELS,) + (UV_CHANNELS,) * 4, dim_res_blocks=(1024, 256, 128, 64, 32),
        dim_out=(None,) * 5, num_res_blocks=(0, 2, 2, 2, 0), resamplers=("conv_transpose",) * 3 + ("bilinear",),
    ))
    points_head: ConvStackConfig = field(default_factory=lambda: _head((1024, 256, 128, 64, 32), 3))
    mask_head: ConvStackConfig = field(default_factory=lambda: _head((1024, 256, 128, 64, 32), 1))
    normal_head: ConvStackConfig | None = None  # present in the "-normal" checkpoints
    scale_dims: tuple[int, ...] = (1024, 1024, 1024, 1)  # MLP on the class token -> log metric scale
    remap_output: str = "exp"  # how the raw points head output becomes a point map
    num_tokens_range: tuple[int, int] = (1200, 3600)  # ViT tokens per image at resolution levels 0 and 9

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale_dims", tuple(self.scale_dims))
        object.__setattr__(self, "num_tokens_range", tuple(self.num_tokens_range))
        if self.remap_output not in REMAPS:
            raise ValueError(f"MoGe2Config: remap_output {self.remap_output!r} not in {list(REMAPS)}")
        heads = {"points_head": self.points_head, "mask_head": self.mask_head, "normal_head": self.normal_head}
        heads = {k: v for k, v in heads.items() if v is not None}
        for name, stack in [("neck", self.neck), *heads.items()]:
            if len(stack.dim_res_blocks) != NUM_LEVELS:
                raise ValueError(f"MoGe2Config: {name} has {len(stack.dim_res_blocks)} levels, MoGe-2 decodes {NUM_LEVELS}")
        want_neck_in = (self.encoder.dim_out + UV_CHANNELS,) + (UV_CHANNELS,) * (NUM_LEVELS - 1)
        if self.neck.dim_in != want_neck_in:
            raise ValueError(f"MoGe2Config: neck.dim_in {self.neck.dim_in} must be {want_neck_in} (features + uv per level)")
        for name, stack in heads.items():
            if stack.dim_in != self.neck.dim_res_blocks:
                raise ValueError(f"MoGe2Config: {name}.dim_in {stack.dim_in} must equal neck.dim_res_blocks {self.neck.dim_res_blocks}")
        out = {"points_head": 3, "mask_head": 1, "normal_head": 3}
        for name, stack in heads.items():
            if stack.dim_out[-1] != out[name]:
                raise ValueError(f"MoGe2Config: {name} must output {out[name]} channels at the last level, got {stack.dim_out[-1]}")
        if self.scale_dims[0] != self.encoder.vit.embed_dim or self.scale_dims[-1] != 1:
            raise ValueError(f"MoGe2Config: scale_dims {self.scale_dims} must go from embed_dim {self.encoder.vit.embed_dim} to 1")
        lo, hi = self.num_tokens_range
        if not 0 < lo <= hi:
            raise ValueError(f"MoGe2Config: num_tokens_range {self.num_tokens_range} must be 0 < lo <= hi")

    @classmethod
    def vitl(cls, normal_head: bool = False) -> "MoGe2Config":
        """The published ViT-L metric-scale model (``moge-2-vitl``; ``normal_head=True`` for ``-normal``)."""
        base = cls()
        return replace(base, normal_head=_head((1024, 256, 128, 64, 32), 3)) if normal_head else base

    @classmethod
    def tiny(cls, normal_head: bool = False) -> "MoGe2Config":
        """A tiny model for CPU tests: 2 blocks of width 32, decoder widths 32..4."""
        dims = (32, 16, 8, 8, 4)
        return cls(
            encoder=EncoderConfig(vit=vit_large(embed_dim=32, depth=2, num_heads=2, img_size=8 * 14),
                                  intermediate_layers=(0, 1), dim_out=32, backbone="tiny"),
            neck=ConvStackConfig(dim_in=(32 + UV_CHANNELS,) + (UV_CHANNELS,) * 4, dim_res_blocks=dims, dim_out=(None,) * 5,
                                 num_res_blocks=(0, 1, 1, 1, 0), resamplers=("conv_transpose",) * 3 + ("bilinear",)),
            points_head=_head(dims, 3), mask_head=_head(dims, 1), normal_head=_head(dims, 3) if normal_head else None,
            scale_dims=(32, 16, 1), num_tokens_range=(16, 64),
        )

    @classmethod
    def from_upstream(cls, cfg: dict[str, Any]) -> "MoGe2Config":
        """Read the ``model_config`` dict of an official checkpoint (microsoft/MoGe ``MoGeModel`` kwargs)."""
        enc = cfg["encoder"]
        backbone = enc["backbone"]
        if backbone not in VIT_ARCHS:
            raise ValueError(f"MoGe-2 config: unknown encoder backbone {backbone!r}; known: {sorted(VIT_ARCHS)}")
        layers = enc["intermediate_layers"]
        depth = VIT_ARCHS[backbone]["depth"]
        layers = tuple(range(depth - layers, depth)) if isinstance(layers, int) else tuple(layers)
        encoder = EncoderConfig(vit=vit_large(**VIT_ARCHS[backbone]), intermediate_layers=layers, dim_out=enc["dim_out"],
                                backbone=backbone)
        heads = {k: ConvStackConfig.from_upstream(cfg[k], k) if cfg.get(k) else None
                 for k in ("neck", "points_head", "mask_head", "normal_head")}
        if heads["points_head"] is None or heads["mask_head"] is None or not cfg.get("scale_head"):
            raise ValueError("MoGe-2 config: points_head, mask_head and scale_head are required (this is not a MoGe-2 config)")
        return cls(encoder=encoder, **heads, scale_dims=tuple(cfg["scale_head"]["dims"]),
                   remap_output=cfg.get("remap_output", "linear"),
                   num_tokens_range=tuple(cfg.get("num_tokens_range", (1200, 3600))))

    def to_upstream(self) -> dict[str, Any]:
        """The upstream ``model_config`` dict (what ``MoGeModel(**cfg)`` takes); JSON-serialisable."""
        cfg: dict[str, Any] = {
            "encoder": {"backbone": self.encoder.backbone, "intermediate_layers": list(self.encoder.intermediate_layers),
                        "dim_out": self.encoder.dim_out},
            "neck": self.neck.to_upstream(), "points_head": self.points_head.to_upstream(),
            "mask_head": self.mask_head.to_upstream(), "scale_head": {"dims": list(self.scale_dims)},
            "remap_output": self.remap_output, "num_tokens_range": list(self.num_tokens_range),
        }
        if self.normal_head is not None:
            cfg["normal_head"] = self.normal_head.to_upstream()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """All fields as plain data (for provenance and safetensors metadata)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MoGe2Config":
        """Inverse of :meth:`to_dict`."""
        stacks = {k: ConvStackConfig(**data[k]) if data.get(k) else None for k in ("neck", "points_head", "mask_head", "normal_head")}
        rest = {k: v for k, v in data.items() if k not in stacks and k != "encoder"}
        enc = dict(data["encoder"])
        return cls(encoder=EncoderConfig(vit=DinoV2Config(**enc.pop("vit")), **enc), **stacks, **rest)
