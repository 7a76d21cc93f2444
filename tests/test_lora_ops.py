"""agentrl.engines.vllm_cpu_lora's LoRA ops against a naive per-token reference (plain torch, no vLLM).

The reference is the ops' contract: for every token t whose slot s = idx[t] is >= 0,
shrink: out[t, :r] = scaling * A[s] @ x[t]; expand: out[t, cols] (+)= B[s] @ x[t]; a token with
slot -1 leaves its output row untouched.
"""

import importlib.util

import pytest
import torch

from agentrl.engines import vllm_cpu_lora as ops

SLOTS, IN, RANK, OUT = 3, 24, 8, 40

INDEX_CASES = {
    "mixed": [-1, 0, 0, 2, -1, 1, 2, 2, -1, 0],
    "all_base": [-1] * 7,
    "one_slot": [1] * 6,
    "last_slot": [2] * 5,
    "blocks": [-1, -1, -1, 0, 0, 0, 0, 2, 2],
    "single": [0],
}


def _weights(rows, cols, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(SLOTS, 1, rows, cols, generator=g).to(dtype)


def _ref_shrink(x, w, out, idx, scaling):
    out = out.clone()
    for t, s in enumerate(idx):
        if s >= 0:
            a = w[s].squeeze(0).to(out.dtype)
            out[t, : a.shape[0]] = scaling * (a @ x[t].to(out.dtype))
    return out


def _ref_expand(x, w, out, idx, offset, size, add):
    out = out.clone()
    for t, s in enumerate(idx):
        if s >= 0:
            b = w[s].squeeze(0).to(out.dtype)
            y = b @ x[t].to(out.dtype)
            n = min(y.shape[0], out.shape[1] - offset) if size is None else size
            cols = slice(offset, offset + n)
            out[t, cols] = out[t, cols] + y[:n] if add else y[:n]
    return out


def _segments(idx):
    """The prefill metadata vLLM builds (compute_meta): runs of equal consecutive slots."""
    slots, lengths = torch.unique_consecutive(torch.tensor(idx), return_counts=True)
    starts = torch.zeros_like(lengths)
    starts[1:] = torch.cumsum(lengths, 0)[:-1]
    return starts, lengths, slots, slots.numel(), int(lengths.max()), int(lengths.sum())


def _close(a, b, dtype):
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", list(INDEX_CASES))
@pytest.mark.parametrize("wdtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("segmented", [False, True])
def test_shrink(case, wdtype, segmented):
    idx = INDEX_CASES[case]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(len(idx), IN, generator=g).to(wdtype)
    w = _weights(RANK, IN, wdtype, 2)
    out = torch.randn(len(idx), RANK, generator=g)  # float32 buffer, as vLLM's; rows -1 must survive
    want = _ref_shrink(x, w, out, idx, 0.5)
    if segmented:
        ops.sgmv_shrink(x, w, out, *_segments(idx), 0.5)
    else:
        ops.bgmv_shrink(x, w, out, torch.tensor(idx), 0.5)
    _close(out, want, wdtype)  # bf16 inputs: multiplied in bf16 (not copied to fp32 first)


@pytest.mark.parametrize("case", list(INDEX_CASES))
@pytest.mark.parametrize("odtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("add", [False, True])
@pytest.mark.parametrize("segmented", [False, True])
def test_expand(case, odtype, add, segmented):
    idx = INDEX_CASES[case]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(len(idx), RANK, generator=g)
    w = _weights(OUT, RANK, odtype, 4)
    out = torch.randn(len(idx), OUT + 5, generator=g).to(odtype)  # wider than the adapter: clipped
    want = _ref_expand(x, w, out, idx, 0, None, add)
    if segmented:
        ops.sgmv_expand(x, w, out, *_segments(idx), add)
    else:
        ops.bgmv_expand(x, w, out, torch.tensor(idx), add)
    _close(out, want, odtype)


@pytest.mark.parametrize("case", list(INDEX_CASES))
@pytest.mark.parametrize("add", [False, True])
@pytest.mark.parametrize("segmented", [False, True])
def test_expand_slice(case, add, segmented):
    idx = INDEX_CASES[case]
    g = torch.Generator().manual_seed(5)
    x = torch.randn(len(idx), RANK, generator=g)
    w = _weights(16, RANK, torch.float32, 6)
    out = torch.randn(len(idx), 3 * 16, generator=g)
    want = _ref_expand(x, w, out, idx, 16, 16, add)
    if segmented:
        ops.sgmv_expand_slice(x, w, out, *_segments(idx), 16, 16, add)
    else:
        ops.bgmv_expand_slice(x, w, out, torch.tensor(idx), 16, 16, add)
    _close(out, want, torch.float32)


def test_segments_with_a_slot_in_two_places():
    """Segments need not be grouped by slot: slot 0 appears twice, apart."""
    idx = [0, 0, 1, 1, -1, 0, 0, 0]
    g = torch.Generator().manual_seed(7)
    x = torch.randn(len(idx), RANK, generator=g)
    w = _weights(OUT, RANK, torch.float32, 8)
    out = torch.randn(len(idx), OUT, generator=g)
    want = _ref_expand(x, w, out, idx, 0, None, True)
    ops.sgmv_expand(x, w, out, *_segments(idx), True)
    _close(out, want, torch.float32)


def test_views_are_written_in_place():
    """punica passes `y.view(-1, width)`: the caller's tensor must change."""
    idx = torch.tensor([0, -1, 1, 1])
    y = torch.zeros(2, 2, OUT)
    x = torch.randn(4, RANK)
    w = _weights(OUT, RANK, torch.float32, 9)
    ops.bgmv_expand(x, w, y.view(-1, OUT), idx, True)
    assert torch.count_nonzero(y.view(-1, OUT)[1]) == 0
    assert torch.count_nonzero(y.view(-1, OUT)[[0, 2, 3]]) > 0


@pytest.mark.parametrize("add", [False, True])
def test_one_input_row_goes_to_every_output_row(add):
    """vLLM's bgmv_expand: a single input row's result is written to all output rows."""
    x = torch.randn(1, RANK)
    w = _weights(OUT, RANK, torch.float32, 10)
    out = torch.ones(3, OUT)
    ops.bgmv_expand(x, w, out, torch.tensor([1]), add)
    want = (w[1, 0] @ x[0]).expand(3, OUT) + (1.0 if add else 0.0)
    _close(out, want, torch.float32)


def test_install_without_vllm_does_nothing():
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed (tests/test_vllm_lora.py covers install)")
    assert ops.install() is False
    assert ops.patch_active() is False
