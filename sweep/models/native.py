"""Native (random-weight) models: a small byte-level BPE tokenizer, trained in memory.

Native models have no tokenizer of their own. Training one on the IOI corpus (well under
a second, deterministic) gives every IOI name its own token, so text tasks run offline.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from sweep.pids import pid_alive
from sweep.tasks import ioi

SPECIAL = "<|endoftext|>"
PREFIX = "patchsweep-tokenizer-"


@lru_cache(maxsize=4)
def build_tokenizer(vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """GPT-2-style tokenizer (leading-space tokens, one special token for BOS/EOS/PAD)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(ioi.corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL,
        eos_token=SPECIAL,
        unk_token=SPECIAL,
        pad_token=SPECIAL,
    )
    # TransformerLens re-loads tokenizers by path (from_pretrained(name_or_path)), so the
    # tokenizer must exist on disk for the life of the process; it is removed at exit, and
    # the directories of processes that died without exiting are removed here.
    remove_stale_tokenizers()
    directory = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    fast.save_pretrained(directory)
    return PreTrainedTokenizerFast.from_pretrained(directory)


def remove_stale_tokenizers(root: str | None = None) -> list[Path]:
    """Remove tokenizer directories left by processes that no longer run (on this host)."""
    removed = []
    for d in Path(root or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        pid = d.name.removeprefix(PREFIX).split("-", 1)[0]
        if d.is_dir() and (not pid.isdigit() or not pid_alive(int(pid))):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed
