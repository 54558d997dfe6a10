"""The torch reference against the frame-by-frame float64 spec, chunk layout, scan
composition and argument checks (all CPU, fast)."""

from __future__ import annotations

import pytest
import torch

from _gdn_fixtures import err_ratio, gdn_inputs, random_state, spec_frame_gdn
from wmkit.kernels import (
    FrameMaps,
    apply_composite,
    chunk_sizes_for,
    combine_composites,
    frame_affine_maps,
    frame_gdn_ref,
    scan_composite,
)

MODES = ("causal", "bidirectional", "chunk_causal")


@pytest.mark.parametrize(
    ("T", "sizes"),
    [(1, [1]), (4, [4]), (5, [5]), (7, [4, 3]), (8, [4, 4]), (9, [4, 5]), (10, [4, 3, 3]), (11, [4, 3, 4]), (121, [4] + [3] * 39), (122, [4] + [3] * 38 + [4]), (123, [4] + [3] * 38 + [5])],
    ids=lambda x: f"T{x}" if isinstance(x, int) else "",
)
def test_chunk_sizes_for(T, sizes):
    assert chunk_sizes_for(T) == sizes
    assert sum(chunk_sizes_for(T)) == T


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("T", [1, 5, 11], ids=lambda t: f"T{t}")
def test_reference_matches_spec(mode, T):
    xs = gdn_inputs(2, T, 7, 2, 6, 5, dtype=torch.float64, requires_grad=False)
    out = frame_gdn_ref(*xs, mode=mode)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, spec_frame_gdn(*xs, mode=mode), rtol=1e-9, atol=1e-9)


def test_reference_initial_state_and_custom_chunks():
    xs = gdn_inputs(1, 7, 5, 2, 4, 3, dtype=torch.float64, requires_grad=False)
    S0, z0 = (x.detach().double() for x in random_state(1, 2, 4, 3))
    out, (S_last, z_last) = frame_gdn_ref(
        *xs, mode="chunk_causal", chunk_sizes=[2, 5], initial_state=(S0, z0), return_final_state=True
    )
    spec = spec_frame_gdn(*xs, mode="chunk_causal", chunk_sizes=[2, 5], initial_state=(S0, z0))
    torch.testing.assert_close(out, spec, rtol=1e-6, atol=1e-6)
    # the final state continues the sequence: running frames 0..6 in two calls equals one call
    first, state = frame_gdn_ref(*(x[:, :3] for x in xs), mode="causal", return_final_state=True)
    second = frame_gdn_ref(*(x[:, 3:].contiguous() for x in xs), mode="causal", initial_state=state)
    torch.testing.assert_close(torch.cat([first, second], 1), frame_gdn_ref(*xs, mode="causal"), rtol=1e-9, atol=1e-9)
    assert S_last.shape == (1, 2, 3, 4) and z_last.shape == (1, 2, 4)


def test_bf16_reference_close_to_fp32():
    xs = gdn_inputs(1, 4, 16, 2, 8, 8)
    ref32 = frame_gdn_ref(*xs, mode="bidirectional")
    ref16 = frame_gdn_ref(*(x.detach().bfloat16() for x in xs), mode="bidirectional")
    assert ref16.dtype == torch.bfloat16
    assert err_ratio(ref16, ref32) < 1e-2


def test_scan_composite_is_the_scan_and_associative():
    xs = gdn_inputs(1, 6, 5, 2, 4, 3, dtype=torch.float64, requires_grad=False)
    q, k, v, beta, gamma, q_rot, k_rot = xs
    maps = frame_affine_maps(k, v, beta, gamma, k_rot)
    S0, z0 = (x.detach().double() for x in random_state(1, 2, 4, 3))
    # folding all frames equals the final state of the reference scan
    _, (S_ref, z_ref) = frame_gdn_ref(*xs, mode="causal", initial_state=(S0, z0), return_final_state=True)
    S_c, z_c = apply_composite((S0, z0), scan_composite(maps))
    torch.testing.assert_close(S_c, S_ref.double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(z_c, z_ref.double(), rtol=1e-5, atol=1e-6)
    # (frames 0-1) ∘ (frames 2-5) == (frames 0-3) ∘ (frames 4-5)
    split = lambda a, b: scan_composite(FrameMaps(*(x[:, :, a:b] for x in maps)))  # noqa: E731
    left = combine_composites(split(0, 2), split(2, 6))
    right = combine_composites(split(0, 4), split(4, 6))
    for a, b in zip(left, right):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _bad(xs, name, value):
    out = list(xs)
    out[["q", "k", "v", "beta", "gamma", "q_rot", "k_rot"].index(name)] = value
    return out


@pytest.mark.parametrize(
    ("case", "match"),
    [
        (lambda xs: _bad(xs, "k", xs[1][:, :, :-1].contiguous()), "k has shape"),
        (lambda xs: _bad(xs, "v", xs[2].double()), "v has dtype"),
        (lambda xs: _bad(xs, "q", xs[0].transpose(1, 2)), "q with shape .* not contiguous"),
        (lambda xs: _bad(xs, "beta", xs[3][..., :1].contiguous()), "beta must be"),
        (lambda xs: _bad(xs, "gamma", xs[4].int()), "gamma has dtype"),
        (lambda xs: _bad(xs, "gamma", torch.where(torch.arange(2) == 1, 1.5, xs[4]).contiguous()), r"gamma\[0, 0, 1\] = 1.5"),
        (lambda xs: _bad(xs, "gamma", torch.zeros_like(xs[4])), r"gamma must lie in \(0, 1\]"),
        (lambda xs: _bad(xs, "beta", torch.full_like(xs[3], float("nan"))), "beta is NaN"),
        (lambda xs: _bad(xs, "v", torch.full_like(xs[2], float("nan"))), "NaN"),
    ],
    ids=["shape", "dtype", "noncontig", "beta-shape", "gamma-int", "gamma>1", "gamma=0", "beta-nan", "v-nan"],
)
def test_reference_rejects_bad_input(case, match):
    xs = [x.detach() for x in gdn_inputs(1, 3, 4, 2, 4, 4)]
    with pytest.raises((ValueError, TypeError), match=match):
        frame_gdn_ref(*case(xs), mode="causal")


def test_reference_rejects_bad_mode_and_chunks():
    xs = [x.detach() for x in gdn_inputs(1, 5, 4, 2, 4, 4)]
    with pytest.raises(ValueError, match="mode must be one of"):
        frame_gdn_ref(*xs, mode="forward")
    with pytest.raises(ValueError, match="sum to T=5"):
        frame_gdn_ref(*xs, mode="chunk_causal", chunk_sizes=[4, 3])
    with pytest.raises(ValueError, match="initial_state must be"):
        frame_gdn_ref(*xs, mode="causal", initial_state=(torch.zeros(1, 2, 4, 4), torch.zeros(2, 4)))
