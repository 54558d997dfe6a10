"""Frame-axis convs under the attention modes (DESIGN §3 step 1) and the RoPE tables."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _gdn_fixtures import gdn_inputs
from wmkit.model.frame_shift import chunk_ids, empty_history
from wmkit.model.gdn_attention import FrameConv, gdn_op
from wmkit.model.positional import apply_rope, rope_tables


def conv_over_frames(x: torch.Tensor, kernel: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Depthwise conv over frames of x [1, T, 1, C] with kernel [C, k], zero padding (left, right)."""
    seq = F.pad(x[0, :, 0].T[None], (left, right))  # [1, C, T + pad]
    return F.conv1d(seq, kernel[:, None], groups=kernel.shape[0])[0].T[None, :, None]


def test_bidirectional_frame_conv_is_the_symmetric_seven_tap_window():
    torch.manual_seed(0)
    conv, x = FrameConv(3, 4), torch.randn(1, 9, 1, 3)
    w = conv.weight.detach()
    symmetric = torch.cat([w, w[:, :-1].flip(1)], 1)  # w0 w1 w2 w3 w2 w1 w0
    got = conv(x, chunk_ids([9]), empty_history(x, 3))
    torch.testing.assert_close(got, conv_over_frames(x, symmetric, 3, 3))


def test_chunk_causal_frame_conv_is_global_causal_plus_flipped_within_chunks():
    torch.manual_seed(1)
    conv, x = FrameConv(2, 4), torch.randn(1, 7, 1, 2)
    w = conv.weight.detach()
    causal = conv_over_frames(x, w, 3, 0)
    flipped = torch.cat([conv_over_frames(x[:, a:b], w.flip(1), 0, 3) for a, b in ((0, 4), (4, 7))], 1)
    expected = causal + flipped - w[:, -1] * x
    torch.testing.assert_close(conv(x, chunk_ids([4, 3]), empty_history(x, 3)), expected)


def test_rope_rotates_relative_positions():
    cos, sin = rope_tables(12, (0, 5), (2, 3), 10000.0)
    q, k = torch.randn(12), torch.randn(12)
    expand = lambda v: v.expand(1, 5, 6, 1, 12)  # noqa: E731
    qr, kr = apply_rope(expand(q), cos, sin)[0], apply_rope(expand(k), cos, sin)[0]
    # Same frame/row/column offset → same score: (t=1, s=0)·(t=0, s=0) vs (t=4, s=0)·(t=3, s=0).
    torch.testing.assert_close((qr[1, 0] * kr[0, 0]).sum(), (qr[4, 0] * kr[3, 0]).sum())
    torch.testing.assert_close(qr.norm(dim=-1), expand(q)[0].norm(dim=-1))  # rotations keep norms
    later = rope_tables(12, (3, 5), (2, 3), 10000.0)
    torch.testing.assert_close(later[0], cos[3:])  # a rollout chunk rotates as in the full clip


def test_chunk_ids_number_the_frames_of_each_chunk():
    assert chunk_ids([4, 3, 4]).tolist() == [0] * 4 + [1] * 3 + [2] * 4
    assert chunk_ids([1]).dtype == torch.int64


def test_gdn_value_checks_run_eagerly_and_stay_out_of_compiled_graphs():
    """Eager calls reject gamma outside (0, 1]; a compiled call has no host sync to break on."""
    q, k, v, beta, gamma, q_rot, k_rot = gdn_inputs(1, 3, 4, 2, 4, 4, requires_grad=False)
    op = gdn_op("reference", torch.device("cpu"))
    bad = gamma.clone()
    bad[0, 1, 0] = 1.5
    with pytest.raises(ValueError, match=r"gamma\[0, 1, 0\] = 1.5"):
        op(q, k, v, beta, bad, q_rot, k_rot, mode="bidirectional")
    compiled = torch.compile(lambda g: op(q, k, v, beta, g, q_rot, k_rot, mode="bidirectional"),
                             backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(gamma), op(q, k, v, beta, gamma, q_rot, k_rot, mode="bidirectional"))
