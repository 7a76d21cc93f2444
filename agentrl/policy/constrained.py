"""Action modes (ARCHITECTURE.md §7): admissible-command decoding with a token trie, and free-text parsing.

Admissible mode: every admissible command is tokenized as the assistant would write
it (`encode(command) + [end-of-turn]`) and put in a trie. At each decoding step only
the children of the current trie node may be sampled (the distribution is
renormalised over them); a command is finished when the end-of-turn token is taken,
which is a leaf. So the output is always exactly one admissible command, and commands
sharing a prefix ("go north" / "go north east") are told apart by whether the
end-of-turn token or the next word comes after the shared part.

Free mode: the action is parsed from the generated text, from the last
`<action>...</action>` pair (`tag`) or the last non-empty line (`last_line`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agentrl.policy.prompt import chat_format


@dataclass
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    command: str | None = None  # set on the leaf reached after the end-of-turn token


class CommandTrie:
    """A trie over the token sequences `encode(command) + [eot_id]` of a list of commands."""

    def __init__(self, sequences: dict[str, list[int]]):
        self.sequences = sequences  # command -> its token ids (what the trie was built from)
        self.root = _Node()
        for command, ids in sequences.items():
            node = self.root
            for i in ids:
                node = node.children.setdefault(i, _Node())
            node.command = command

    @classmethod
    def from_commands(cls, tokenizer, commands: list[str]) -> CommandTrie:
        fmt = chat_format(tokenizer)
        seqs: dict[str, list[int]] = {}
        for c in commands:
            if c not in seqs:
                seqs[c] = fmt.encode(c) + [fmt.eot_id]
        return cls(seqs)

    def walk(self, prefix: list[int]) -> _Node:
        """The node reached by `prefix`; ValueError if `prefix` leaves the trie."""
        node = self.root
        for j, i in enumerate(prefix):
            nxt = node.children.get(i)
            if nxt is None:
                raise ValueError(f"token {i} at action position {j} is not allowed by the admissible commands")
            node = nxt
        return node


def allowed_token_ids(tokenizer, admissible: list[str], action_ids: list[int]) -> list[list[int]]:
    """The allowed token ids (sorted) at each position of `action_ids` given its prefix.

    This is the support of the constrained distribution the policy sampled from at that
    position; the learner renormalises over it to recompute the same log-probs.
    ValueError if `action_ids` is not a path of the admissible-command trie.
    """
    trie = CommandTrie.from_commands(tokenizer, admissible)
    node = trie.root
    out = []
    for j, i in enumerate(action_ids):
        out.append(sorted(node.children))
        nxt = node.children.get(i)
        if nxt is None:
            raise ValueError(f"token {i} at action position {j} is not allowed by the admissible commands")
        node = nxt
    return out


_TAG = re.compile(r"<action>(.*?)</action>", re.DOTALL | re.IGNORECASE)


def parse_action(raw: str, parser: str) -> tuple[str, bool]:
    """Free-mode output -> (command, parsed). Unparseable -> ("", False)."""
    if parser == "tag":
        found = [m.strip() for m in _TAG.findall(raw)]
        found = [f for f in found if f]
        return (found[-1], True) if found else ("", False)
    if parser == "last_line":
        lines = [ln.strip() for ln in raw.splitlines() if ln.strip()]
        return (lines[-1], True) if lines else ("", False)
    raise ValueError(f"unknown action_parser '{parser}' (tag | last_line)")
