"""The shipped demo model: induction on repeated random letters (its task: ``task=induction``).

A 2-layer attention-only transformer trained to continue sequences ``BOS r1..rn r1..rn``
forms the textbook induction circuit (Olsson et al. 2022): a previous-token head in layer
0 writes "the token before me was X" into each position, and an induction head in layer 1
attends from the current token X to the position after X's earlier occurrence and copies
that token. Retrain and re-ship it with::

    python -m sweep.models.train_induction  # minutes on a laptop CPU; writes sweep/data/induction

The weights (~110 KB), the tokenizer and ``training.json`` (the settings, final loss and
per-head scores) are in ``sweep/data/induction``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformer_lens.model_bridge import TransformerBridge
from transformers import PreTrainedTokenizerFast

from sweep.tasks.induction import LETTERS, text

DATA = Path(__file__).resolve().parent.parent / "data" / "induction"
SPECIAL = "<|endoftext|>"
CONFIG: dict[str, Any] = dict(
    n_layers=2,
    d_model=64,
    n_heads=4,
    d_head=16,
    n_ctx=32,
    attn_only=True,
    # Without layer norm it forms the textbook circuit; with it, training on this data found
    # a variant (layer 1 attends two past the earlier occurrence, reading a layer-0 head).
    normalization_type=None,
    act_fn="gelu_new",
    seed=0,
)


def build_tokenizer(directory: Path) -> PreTrainedTokenizerFast:
    """Byte-level BPE whose only merges are ' A' .. ' Z': one token per letter."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=len(alphabet) + 1 + len(LETTERS),
        special_tokens=[SPECIAL],
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator([text(LETTERS)] * 10, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=SPECIAL, eos_token=SPECIAL, unk_token=SPECIAL,
        pad_token=SPECIAL,
    )  # fmt: skip
    fast.save_pretrained(directory)
    return PreTrainedTokenizerFast.from_pretrained(directory)


def load(device: str = "cpu", dtype: torch.dtype = torch.float32) -> TransformerBridge:
    """The shipped model (TransformerLens reloads tokenizers by path, so it is read from
    the package directory)."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(DATA)
    model = _build(tokenizer, device, dtype)
    state = torch.load(DATA / "model.pt", map_location=device, weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def _build(tokenizer: Any, device: str, dtype: torch.dtype) -> TransformerBridge:
    cfg = {**CONFIG, "d_vocab": len(tokenizer)}
    return TransformerBridge.boot_native(  # type: ignore[attr-defined]
        cfg, tokenizer=tokenizer, device=device, dtype=dtype
    )


def letter_ids(tokenizer: Any) -> torch.Tensor:
    return torch.tensor([tokenizer.convert_tokens_to_ids("Ġ" + x) for x in LETTERS])


def batch(ids: torch.Tensor, size: int, half: int, gen: torch.Generator) -> torch.Tensor:
    """``BOS r1..r_half r1..r_half``, letters distinct within a sequence (for scoring)."""
    picks = torch.rand(size, len(ids), generator=gen).argsort(-1)[:, :half]
    seq = ids[picks]
    bos = torch.zeros(size, 1, dtype=torch.long)
    return torch.cat([bos, seq, seq], 1)


def training_batch(
    ids: torch.Tensor, size: int, gen: torch.Generator, length: int = 28
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens ``BOS p.. r1..rh g.. r1..rh f..`` (random lengths of prefix p, gap g, filler
    f; letters of p, g, f not in r) and a mask of the positions whose next token the
    repeat makes predictable. Random offsets leave no positional shortcut: only the
    content (where did this letter occur before, what came after it) predicts the repeat."""
    tokens = torch.zeros(size, length, dtype=torch.long)
    mask = torch.zeros(size, length - 1, dtype=torch.bool)
    for b in range(size):
        order = ids[torch.randperm(len(ids), generator=gen)]
        h = int(torch.randint(3, 9, (1,), generator=gen))
        p, g = (int(x) for x in torch.randint(0, 6, (2,), generator=gen))
        rep, other = order[:h], order[h:]
        fill = other[torch.randint(len(other), (length,), generator=gen)]
        seq = torch.cat([fill[:p], rep, fill[p : p + g], rep])
        tokens[b, 1:] = torch.cat([seq, fill[: length - 1 - len(seq)]])
        second = 1 + p + h + g  # position of the repeat's first token
        mask[b, second : second + h - 1] = True  # predicts r2..rh
    return tokens, mask


def train(directory: Path, steps: int = 3000, seed: int = 0) -> dict[str, Any]:
    """Train on repeats at random offsets; loss on the predictable part of the repeat."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(directory)
    model = _build(tokenizer, "cpu", torch.float32)
    ids = letter_ids(tokenizer)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    start, losses = time.perf_counter(), []
    for _ in range(steps):
        tokens, mask = training_batch(ids, 64, gen)
        logits = model(tokens)[:, :-1]
        loss = F.cross_entropy(logits[mask], tokens[:, 1:][mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    torch.save(model.state_dict(), directory / "model.pt")
    scores = head_scores(model, ids)
    info = {
        "config": CONFIG,
        "steps": steps,
        "seed": seed,
        "batch": 64,
        "optimizer": "AdamW lr 3e-3 weight_decay 0.01",
        "final_loss": sum(losses[-50:]) / 50,
        "seconds": round(time.perf_counter() - start, 1),
        **{k: v.tolist() for k, v in scores.items()},
    }
    (directory / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


@torch.no_grad()
def head_scores(model: Any, ids: torch.Tensor, half: int = 10, n: int = 64) -> dict[str, Any]:
    """Per head [layer, head]: mean attention to the previous token (previous-token score)
    and, in the repeat, to the token after the current token's first occurrence
    (induction score), on fresh repeated random letters. 1 = all attention there."""
    tokens = batch(ids, n, half, torch.Generator().manual_seed(12345))
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names_filter=lambda x: x in names)
    pattern = torch.stack([cache[x] for x in names])  # [layer, batch, head, q, k]
    q = torch.arange(1, tokens.shape[1])
    prev = pattern[..., q, q - 1].mean((1, 3))
    rep = torch.arange(half + 1, 2 * half + 1)
    induction = pattern[..., rep, rep - half + 1].mean((1, 3))
    return {"previous_token_score": prev, "induction_score": induction}
