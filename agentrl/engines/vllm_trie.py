"""agentrl's command trie as a vLLM (V1) logits processor: admissible mode on the vllm engine.

Loaded by vLLM inside its engine process (`LLM(logits_processors=[CommandTrieProcessor])`).
A request is constrained when its `SamplingParams.extra_args["agentrl_commands"]` holds the
canonical token sequences of its admissible commands (`encode(command) + [end of turn]`, exactly the
sequences of `agentrl.policy.constrained.CommandTrie`). At every decoding step the processor walks
the request's trie along the tokens generated so far and sets every logit outside the children of
that node to -inf, so only canonical tokenisations can be sampled (vLLM's structured-output "choice"
lets a model spell a command with any tokens). It runs before temperature, as vLLM applies
processors that change the argmax; with `logprobs_mode="processed_logprobs"` the log-prob vLLM
returns is then log_softmax((masked logits) / T) of the sampled token: the renormalised constrained
distribution the learner recomputes (`agentrl.policy.logprobs`).
"""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from agentrl.policy.constrained import CommandTrie

KEY = "agentrl_commands"


class _TrieState:
    __slots__ = ("node", "out", "seen")

    def __init__(self, sequences: list[list[int]], out: list[int]):
        trie = CommandTrie({i: [int(t) for t in seq] for i, seq in enumerate(sequences)})
        self.node, self.out, self.seen = trie.root, out, 0  # `out`: vLLM's live list of generated ids

    def allowed(self) -> list[int] | None:
        while self.seen < len(self.out) and self.node is not None:  # follow the tokens sampled since the last step
            self.node = self.node.children.get(self.out[self.seen])
            self.seen += 1
        if self.node is None or not self.node.children:
            return None  # a finished path (or a token off the trie): no constraint
        return list(self.node.children)


class CommandTrieProcessor(LogitsProcessor):
    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.device = device
        self.states: dict[int, _TrieState] = {}

    def is_argmax_invariant(self) -> bool:
        return False  # it masks tokens, so it changes the argmax: applied to greedy requests too

    @staticmethod
    def _new_state(params, prompt_ids, output_ids) -> _TrieState | None:
        seqs = (params.extra_args or {}).get(KEY) if params is not None else None
        return _TrieState(seqs, output_ids) if seqs else None

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.states, batch_update, self._new_state)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.states:
            return logits
        rows, cols = [], []
        masked = []
        for row, state in self.states.items():
            allowed = state.allowed()
            if allowed is None:
                continue
            masked.append(row)
            rows += [row] * len(allowed)
            cols += allowed
        if not masked:
            return logits
        keep = torch.zeros((len(masked), logits.shape[1]), dtype=torch.bool, device=logits.device)
        where = {row: i for i, row in enumerate(masked)}
        keep[torch.tensor([where[r] for r in rows], device=logits.device), torch.tensor(cols, device=logits.device)] = (
            True
        )
        idx = torch.tensor(masked, device=logits.device)
        logits[idx] = logits[idx].masked_fill(~keep, float("-inf"))
        return logits
