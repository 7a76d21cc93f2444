"""TensorBoard (`train.report_to: [tensorboard]`, the `tensorboard` extra): event files in
`<run folder>/tensorboard/`, written with torch's SummaryWriter. Scalars per iteration, the recipe and
the transcripts as markdown text. A resumed run writes to the same folder with `purge_step`, so
TensorBoard hides what the crashed session had logged from the resumed iteration on."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import yaml

from agentrl.trackers.base import import_library

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")


def md_escape(text: Any) -> str:
    """A table cell's text for TensorBoard's markdown: one line, HTML escaped, markdown punctuation escaped."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(" ".join(str(text).split()), quote=False))


def md_code(text: str) -> str:
    """Text shown verbatim: an indented code block (no fence its content could close)."""
    return "\n".join("    " + line for line in text.splitlines() or [""])


class TensorBoardTracker:
    name = "tensorboard"
    has_tables = True

    def __init__(self, output_dir: str | Path):
        import_library(self.name, "tensorboard")
        self.SummaryWriter = import_library(self.name, "torch.utils.tensorboard", extra="tensorboard").SummaryWriter
        self.output_dir = Path(output_dir)
        self.writer = None
        self.log_dir: Path | None = None

    def start(self, run_id: int, run_name: str, config: dict, key: str, resume_step: int | None = None) -> None:
        self.log_dir = self.output_dir / run_name / "tensorboard"
        self.writer = self.SummaryWriter(str(self.log_dir), purge_step=resume_step)
        if resume_step is None:
            self.writer.add_text("recipe", md_code(yaml.safe_dump(config, sort_keys=False)), 0)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def log_table(self, step: int, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        text_col = columns.index("transcript") if "transcript" in columns else None
        head = [c for i, c in enumerate(columns) if i != text_col]
        lines = ["| " + " | ".join(md_escape(c) for c in head) + " |", "|" + "---|" * len(head)]
        blocks = []
        for row in rows:
            cells = [v for i, v in enumerate(row) if i != text_col]
            lines.append("| " + " | ".join(md_escape(v) for v in cells) + " |")
            if text_col is not None:
                label = ", ".join(f"{c} {md_escape(v)}" for c, v in zip(head, cells) if c in ("episode_id", "task_id"))
                blocks.append(f"**{label}**\n\n{md_code(str(row[text_col]))}")
        self.writer.add_text(name, "\n".join(lines) + "\n\n" + "\n\n".join(blocks), step)
        self.writer.flush()

    def finish(self, status: str = "finished") -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
