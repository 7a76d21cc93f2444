"""Library noise that is not the user's business, silenced where agentrl causes it.

transformers draws progress bars on every model load ("Loading weights", the GGUF
"Converting and de-quantizing"), and peft/transformers emit deprecation warnings about
their own internals that a user cannot act on. `quiet_libraries()` turns off those bars
and filters exactly those messages (by text), so any other warning still shows.
`AGENTRL_DEBUG=1` leaves everything on.
"""

from __future__ import annotations

import os
import warnings

# (category, message regex) of warnings raised inside the libraries, not by agentrl's calls
_KNOWN = [
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
    (UserWarning, r"Could not find a config file in"),  # peft: a GGUF base folder has no config.json
]
_done = False


def debug() -> bool:
    return os.environ.get("AGENTRL_DEBUG", "") not in ("", "0")


def quiet_libraries() -> None:
    """Idempotent; a no-op with AGENTRL_DEBUG=1."""
    global _done
    if _done or debug():
        return
    _done = True
    for category, message in _KNOWN:
        warnings.filterwarnings("ignore", message=message, category=category)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:  # the GGUF loader draws a bare tqdm bar of its own ("Converting and de-quantizing GGUF tensors")
        import functools

        import transformers.modeling_gguf_pytorch_utils as gguf_utils

        gguf_utils.tqdm = functools.partial(gguf_utils.tqdm, disable=True)
    except (ImportError, AttributeError):  # pragma: no cover - other transformers layouts
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:  # pragma: no cover - huggingface_hub always comes with transformers
        pass
