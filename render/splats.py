"""3D Gaussian splats and the standard 3DGS PLY layout (DESIGN §5).

One vertex per Gaussian, every property a scalar (graphdeco-inria
``gaussian-splatting`` ``GaussianModel.save_ply``; gsplat's exporter writes
the same names)::

    x y z            mean (world units)
    nx ny nz         normals, written as zeros, ignored on read (optional)
    f_dc_0..2        SH degree-0 coefficient per colour channel
    f_rest_0..M-1    higher SH coefficients, M = 3 (K - 1), K = (deg + 1)^2,
                     channel-major: f_rest_{c (K-1) + k - 1} is channel c, basis k
    opacity          logit (the renderer applies a sigmoid)
    scale_0..2       log scale (the renderer applies exp)
    rot_0..3         quaternion w x y z (normalised by the renderer)

Files may be ``binary_little_endian``, ``binary_big_endian`` or ``ascii``;
the vertex element must come first (every 3DGS exporter writes it alone).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = ["SH_C0", "Splats", "SplatError", "read_ply", "write_ply", "rgb_to_sh_dc", "sh_dc_to_rgb"]

SH_C0 = 0.28209479177387814  # Y_0^0 = 1 / (2 sqrt(pi))

PlyEncoding = Literal["binary", "ascii"]

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_FORMATS = {"binary_little_endian": "<", "binary_big_endian": ">", "ascii": None}
_MAX_HEADER_BYTES = 1 << 16
_F_REST = re.compile(r"^f_rest_(\d+)$")


class SplatError(ValueError):
    """Malformed splats or splat file; the message names the file and the reason."""


@dataclass(frozen=True)
class Splats:
    """N Gaussians with raw (pre-activation) parameters, as 3DGS stores them.

    Attributes:
        means: (N, 3) float32 centres in world units.
        quats: (N, 4) float32 rotations, w x y z (not necessarily unit).
        log_scales: (N, 3) float32 log of the per-axis standard deviations.
        opacity_logits: (N,) float32 logit of the opacity.
        sh: (N, K, 3) float32 SH coefficients, K = (sh_degree + 1)^2, basis-major.
    """

    means: np.ndarray
    quats: np.ndarray
    log_scales: np.ndarray
    opacity_logits: np.ndarray
    sh: np.ndarray

    def __post_init__(self) -> None:
        for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
            object.__setattr__(self, name, np.ascontiguousarray(getattr(self, name), dtype=np.float32))
        n = len(self.means)
        want = {
            "means": (n, 3),
            "quats": (n, 4),
            "log_scales": (n, 3),
            "opacity_logits": (n,),
        }
        for name, shape in want.items():
            if getattr(self, name).shape != shape:
                raise SplatError(f"splats.{name} has shape {getattr(self, name).shape}, expected {shape}")
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3 or _degree(self.sh.shape[1]) is None:
            raise SplatError(f"splats.sh has shape {self.sh.shape}, expected ({n}, K, 3) with K in 1, 4, 9, 16")

    def __len__(self) -> int:
        return len(self.means)

    @property
    def sh_degree(self) -> int:
        """SH degree 0-3 (K = (degree + 1)^2 coefficients per channel)."""
        return _degree(self.sh.shape[1])  # type: ignore[return-value]

    @property
    def scales(self) -> np.ndarray:
        """(N, 3) standard deviations, exp of ``log_scales``."""
        return np.exp(self.log_scales)

    @property
    def opacities(self) -> np.ndarray:
        """(N,) opacities in (0, 1), sigmoid of ``opacity_logits``."""
        return 1.0 / (1.0 + np.exp(-self.opacity_logits))

    def select(self, index: np.ndarray | slice) -> "Splats":
        """The Gaussians at ``index`` (a mask, indices or a slice)."""
        return Splats(self.means[index], self.quats[index], self.log_scales[index],
                      self.opacity_logits[index], self.sh[index])  # fmt: skip

    def validate(self, name: str = "splats") -> "Splats":
        """Raise :class:`SplatError` naming ``name`` if empty or any value is non-finite; return self."""
        if len(self) == 0:
            raise SplatError(f"{name}: no Gaussians")
        for field in ("means", "quats", "log_scales", "opacity_logits", "sh"):
            bad = ~np.isfinite(getattr(self, field)).reshape(len(self), -1).all(axis=1)
            if bad.any():
                raise SplatError(
                    f"{name}: non-finite {field} in {int(bad.sum())} Gaussians (first at {int(np.flatnonzero(bad)[0])})"
                )
        zero = np.linalg.norm(self.quats, axis=1) < 1e-12
        if zero.any():
            raise SplatError(f"{name}: zero-norm quaternion at Gaussian {int(np.flatnonzero(zero)[0])}")
        return self


def rgb_to_sh_dc(rgb: np.ndarray) -> np.ndarray:
    """SH degree-0 coefficients whose rendered colour is ``rgb`` (..., 3) in [0, 1]: (rgb - 0.5) / C0."""
    return (np.asarray(rgb, dtype=np.float32) - 0.5) / SH_C0


def sh_dc_to_rgb(dc: np.ndarray) -> np.ndarray:
    """View-independent colour 0.5 + C0 * dc of SH degree-0 coefficients (..., 3)."""
    return 0.5 + SH_C0 * np.asarray(dc, dtype=np.float32)


def _degree(k: int) -> int | None:
    return {1: 0, 4: 1, 9: 2, 16: 3}.get(k)


# ---------------------------------------------------------------------------
# PLY
# ---------------------------------------------------------------------------


def _property_names(sh_degree: int) -> list[str]:
    k = (sh_degree + 1) ** 2
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(3 * (k - 1))]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


def write_ply(splats: Splats, path: str | Path, encoding: PlyEncoding = "binary") -> None:
    """Write ``splats`` as a standard 3DGS PLY (float32 properties, layout: module docstring).

    Args:
        splats: the Gaussians.
        path: output file.
        encoding: ``"binary"`` (little-endian, what trainers write) or ``"ascii"``.
    """
    if encoding not in ("binary", "ascii"):
        raise SplatError(f"{path}: PLY encoding must be 'binary' or 'ascii', got {encoding!r}")
    names = _property_names(splats.sh_degree)
    n = len(splats)
    # f_rest is channel-major: (N, K-1, 3) -> (N, 3, K-1) -> flat, as 3DGS transposes before saving.
    rest = splats.sh[:, 1:, :].transpose(0, 2, 1).reshape(n, -1)
    columns = np.concatenate(
        [splats.means, np.zeros((n, 3), np.float32), splats.sh[:, 0, :], rest,
         splats.opacity_logits[:, None], splats.log_scales, splats.quats],
        axis=1,
    )  # fmt: skip
    fmt = "binary_little_endian" if encoding == "binary" else "ascii"
    header = "\n".join(
        ["ply", f"format {fmt} 1.0", f"element vertex {n}"]
        + [f"property float {name}" for name in names]
        + ["end_header"]
    )
    with open(path, "wb") as f:
        f.write((header + "\n").encode("ascii"))
        if encoding == "binary":
            f.write(columns.astype("<f4").tobytes())
        else:
            np.savetxt(f, columns, fmt="%.9g")


def _parse_header(path: Path, head: bytes) -> tuple[str, int, list[tuple[str, str]], int]:
    """(format, vertex count, [(name, numpy type)], header byte length) of a PLY header."""
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise SplatError(f"{path}: not a PLY file (no 'ply' ... 'end_header' header)")
    body_start = head.index(b"\n", end) + 1
    fmt = None
    count = None
    props: list[tuple[str, str]] = []
    element = None
    for line in head[:end].decode("ascii", errors="replace").splitlines()[1:]:
        parts = line.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        if parts[0] == "format":
            if len(parts) < 2 or parts[1] not in _FORMATS:
                raise SplatError(f"{path}: unsupported PLY format line {line!r}")
            fmt = parts[1]
        elif parts[0] == "element":
            if element is None and (len(parts) != 3 or parts[1] != "vertex" or not parts[2].isdigit()):
                raise SplatError(f"{path}: the first PLY element must be 'element vertex <count>', got {line!r}")
            element = parts[1]
            if element == "vertex":
                count = int(parts[2])
        elif parts[0] == "property" and element == "vertex":
            if parts[1] == "list":
                raise SplatError(f"{path}: vertex property {line!r} is a list; 3DGS properties are scalars")
            if len(parts) != 3 or parts[1] not in _PLY_TYPES:
                raise SplatError(f"{path}: bad vertex property line {line!r}")
            props.append((parts[2], _PLY_TYPES[parts[1]]))
    if fmt is None or count is None:
        raise SplatError(f"{path}: PLY header lacks a 'format' or 'element vertex' line")
    return fmt, count, props, body_start


def _read_vertices(path: Path) -> np.ndarray:
    """The vertex element of a PLY file as a numpy structured array."""
    data = path.read_bytes()
    fmt, count, props, start = _parse_header(path, data[:_MAX_HEADER_BYTES])
    names = [name for name, _ in props]
    if len(set(names)) != len(names):
        raise SplatError(f"{path}: duplicate vertex property names")
    order = _FORMATS[fmt]
    if order is not None:
        dtype = np.dtype([(name, order + t) for name, t in props])
        need = count * dtype.itemsize
        if len(data) - start < need:
            raise SplatError(
                f"{path}: header declares {count} vertices ({need} bytes) but only {len(data) - start} bytes follow"
            )
        return np.frombuffer(data, dtype=dtype, count=count, offset=start)
    lines = data[start:].decode("ascii", errors="replace").splitlines()
    rows = [line.split() for line in lines if line.strip()][:count]
    if len(rows) < count:
        raise SplatError(f"{path}: header declares {count} vertices but only {len(rows)} data lines follow")
    bad = next((i for i, row in enumerate(rows) if len(row) != len(props)), None)
    if bad is not None:
        raise SplatError(f"{path}: vertex {bad} has {len(rows[bad])} values, expected {len(props)}")
    out = np.empty(count, dtype=np.dtype([(name, t) for name, t in props]))
    try:
        values = np.array(rows, dtype=np.float64).reshape(count, len(props))
    except ValueError as err:
        raise SplatError(f"{path}: non-numeric vertex value ({err})") from err
    for j, name in enumerate(names):
        out[name] = values[:, j]
    return out


def read_ply(path: str | Path) -> Splats:
    """Read a standard 3DGS PLY (binary or ascii, SH degree 0-3) into validated :class:`Splats`.

    Raises:
        SplatError: naming the file, for a missing property, an f_rest count
            that is no SH degree, a vertex count the data does not hold, or a
            non-finite value.
    """
    path = Path(path)
    if not path.is_file():
        raise SplatError(f"{path}: no such splat file")
    v = _read_vertices(path)
    present = set(v.dtype.names or ())
    required = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]  # fmt: skip
    missing = [name for name in required if name not in present]
    if missing:
        raise SplatError(f"{path}: missing 3DGS vertex properties {missing}")
    rest_ids = sorted(int(m.group(1)) for name in present if (m := _F_REST.match(name)))
    n_rest = len(rest_ids)
    k = n_rest // 3 + 1
    if rest_ids != list(range(n_rest)) or n_rest % 3 or _degree(k) is None:
        raise SplatError(
            f"{path}: f_rest_* properties are {n_rest} (ids must run 0..M-1 with M = 0, 9, 24 or 45 for SH degree 0-3)"
        )

    def cols(names: list[str]) -> np.ndarray:
        return np.stack([v[name].astype(np.float32) for name in names], axis=-1).reshape(len(v), len(names))

    sh = np.empty((len(v), k, 3), np.float32)
    sh[:, 0, :] = cols(["f_dc_0", "f_dc_1", "f_dc_2"])
    if k > 1:
        sh[:, 1:, :] = cols([f"f_rest_{i}" for i in rest_ids]).reshape(len(v), 3, k - 1).transpose(0, 2, 1)
    splats = Splats(
        means=cols(["x", "y", "z"]),
        quats=cols(["rot_0", "rot_1", "rot_2", "rot_3"]),
        log_scales=cols(["scale_0", "scale_1", "scale_2"]),
        opacity_logits=v["opacity"].astype(np.float32),
        sh=sh,
    )
    return splats.validate(str(path))
