"""3DGS PLY round trips (binary and ascii, SH degree 0-3) and malformed files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wmkit.render.splats import SH_C0, Splats, SplatError, read_ply, rgb_to_sh_dc, sh_dc_to_rgb, write_ply


def _random_splats(n: int, degree: int, seed: int = 0) -> Splats:
    rng = np.random.default_rng(seed)
    k = (degree + 1) ** 2
    return Splats(
        means=rng.normal(size=(n, 3)),
        quats=rng.normal(size=(n, 4)),
        log_scales=rng.normal(-3, 0.5, size=(n, 3)),
        opacity_logits=rng.normal(size=n),
        sh=rng.normal(size=(n, k, 3)),
    )


@pytest.mark.parametrize("encoding", ["binary", "ascii"])
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_ply_round_trip(tmp_path: Path, degree: int, encoding: str) -> None:
    splats = _random_splats(17, degree, seed=degree)
    path = tmp_path / f"d{degree}.ply"
    write_ply(splats, path, encoding=encoding)
    back = read_ply(path)
    assert back.sh_degree == degree and len(back) == 17
    for field in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        np.testing.assert_array_equal(getattr(back, field), getattr(splats, field), err_msg=field)


def test_f_rest_is_channel_major(tmp_path: Path) -> None:
    """f_rest_{c (K-1) + k - 1} holds channel c of SH basis k, as graphdeco-inria writes it."""
    splats = _random_splats(3, 1)
    path = tmp_path / "s.ply"
    write_ply(splats, path, encoding="ascii")
    header, body = path.read_text().split("end_header\n")
    names = [line.split()[-1] for line in header.splitlines() if line.startswith("property")]
    row = np.array(body.splitlines()[0].split(), dtype=np.float64)
    for c in range(3):
        for k in range(1, 4):
            assert row[names.index(f"f_rest_{c * 3 + k - 1}")] == pytest.approx(splats.sh[0, k, c])
    assert names[:3] == ["x", "y", "z"] and names[-4:] == ["rot_0", "rot_1", "rot_2", "rot_3"]


def test_reads_big_endian_and_extra_properties(tmp_path: Path) -> None:
    """A hand-made header in another byte order, with double x and an extra property, reads the same."""
    names = ["x", "y", "z", "extra", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
             "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]  # fmt: skip
    dtype = np.dtype([(n, ">f8" if n == "x" else ">f4") for n in names])
    data = np.zeros(2, dtype)
    data["x"] = [1.5, -2.0]
    data["rot_0"] = 1.0
    data["f_dc_1"] = [0.25, 0.5]
    header = "ply\nformat binary_big_endian 1.0\ncomment made by hand\nelement vertex 2\n"
    header += "".join(f"property {'double' if n == 'x' else 'float'} {n}\n" for n in names) + "end_header\n"
    path = tmp_path / "be.ply"
    path.write_bytes(header.encode() + data.tobytes())
    splats = read_ply(path)
    np.testing.assert_array_equal(splats.means[:, 0], [1.5, -2.0])
    np.testing.assert_array_equal(splats.sh[:, 0, 1], [0.25, 0.5])
    assert splats.sh_degree == 0


def _ascii_ply(path: Path, drop: str = "", count_delta: int = 0, row_edit=None) -> Path:
    """An ascii 3DGS PLY of 4 Gaussians (SH degree 1), with one property dropped or the data edited."""
    write_ply(_random_splats(4, 1), path, encoding="ascii")
    header, body = path.read_text().split("end_header\n")
    names = [line.split()[-1] for line in header.splitlines() if line.startswith("property")]
    rows = [line.split() for line in body.splitlines()]
    if drop:
        j = names.index(drop)
        header = header.replace(f"property float {drop}\n", "")
        rows = [row[:j] + row[j + 1 :] for row in rows]
    header = header.replace("element vertex 4", f"element vertex {4 + count_delta}")
    if row_edit is not None:
        rows[-1] = row_edit(rows[-1])
    path.write_text(header + "end_header\n" + "".join(" ".join(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"drop": "scale_1"}, "missing 3DGS vertex properties \\['scale_1'\\]"),
        ({"drop": "f_rest_8"}, "f_rest_\\* properties are 8"),
        ({"count_delta": 1}, "declares 5 vertices but only 4"),
        ({"row_edit": lambda row: row + ["1"]}, "vertex 3 has 27 values, expected 26"),
        ({"row_edit": lambda row: ["nan"] + row[1:]}, "non-finite means in 1 Gaussians \\(first at 3\\)"),
    ],
    ids=["missing-property", "bad-f-rest-count", "too-few-vertices", "wrong-value-count", "nan"],
)
def test_malformed_ply_names_file_and_reason(tmp_path: Path, kwargs: dict, reason: str) -> None:
    path = _ascii_ply(tmp_path / "bad.ply", **kwargs)
    with pytest.raises(SplatError, match=reason) as err:
        read_ply(path)
    assert str(path) in str(err.value)


def test_not_a_ply_names_file(tmp_path: Path) -> None:
    path = tmp_path / "x.ply"
    path.write_text("plx\nend_header\n")
    with pytest.raises(SplatError, match=f"{path}: not a PLY file"):
        read_ply(path)


def test_truncated_binary_names_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.ply"
    write_ply(_random_splats(5, 2), path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(SplatError, match=f"{path}.*declares 5 vertices"):
        read_ply(path)


def test_shape_checks_and_activations() -> None:
    with pytest.raises(SplatError, match="sh has shape"):
        Splats(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros((2, 3)), np.zeros(2), np.zeros((2, 5, 3)))
    splats = _random_splats(3, 0)
    np.testing.assert_allclose(splats.scales, np.exp(splats.log_scales))
    np.testing.assert_allclose(splats.opacities, 1 / (1 + np.exp(-splats.opacity_logits)), rtol=1e-6)
    rgb = np.array([0.1, 0.5, 0.9])
    np.testing.assert_allclose(sh_dc_to_rgb(rgb_to_sh_dc(rgb)), rgb, atol=1e-6)
    assert rgb_to_sh_dc(np.array([1.0]))[0] == pytest.approx(0.5 / SH_C0)
    with pytest.raises(SplatError, match="scene-x: no Gaussians"):
        splats.select(np.zeros(3, bool)).validate("scene-x")
