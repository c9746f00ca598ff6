"""``task=docstring``: the next parameter of a Python docstring (Heimersheim and Janiak
2023, "A circuit for Python docstrings in a 4-layer attention-only transformer").

Clean: a function of six parameters whose Sphinx docstring describes the first three and
opens the fourth, ``:param``; the answer is the fourth parameter, the wrong set the
other five. Corrupted: the same prompt with the docstring's three names replaced by other
names (the paper's ``random_doc``), so no earlier ``:param NAME`` says which parameter
comes next. The paper's metric is the answer's logit above the best wrong one:
``metric.names=[logit_gap]``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sweep.errors import TaskError
from sweep.spec import GeneratedTaskSpec
from sweep.tasks.base import CountTokens, Example

NAMES = (
    "load", "size", "files", "last", "item", "data", "user", "path", "name", "value",
    "key", "line", "text", "state", "model", "image", "node", "port", "host", "mode",
    "limit", "count", "index", "token", "source", "target", "result", "config", "context",
    "parent", "child", "option", "field", "label", "level", "query", "table", "group",
)  # fmt: skip
"""Parameter names (one token each with their space, for the tokenizer)."""
WORDS = (
    "oil", "column", "piece", "crime", "population", "unit", "dark", "board", "tree",
    "song", "river", "fish", "stone", "glass", "plant", "cloud", "metal", "chair", "paper",
    "horse", "grass", "shop", "train", "wind", "salt", "milk", "bird", "coat", "gold",
)  # fmt: skip
"""Words of the descriptions (random, as the paper's are)."""
PARAMS = 6
DESCRIBED = 3
"""Parameters the docstring describes before it opens the next one (the answer)."""
NAMED = ("A_def", "B_def", "C_def", "A_doc", "B_doc", "C_doc", "END")


@dataclass(frozen=True, slots=True)
class DocstringTaskSpec(GeneratedTaskSpec):
    """A generated task: ``n_prompts`` prompts drawn with ``seed``; score it with
    ``metric.names=[logit_gap]``, the paper's metric."""

    KIND = "docstring"
    NAMED = NAMED

    kind: str = "docstring"


def prompt(function: str, params: list[str], docs: list[str], words: list[str]) -> str:
    """The function's head and docstring up to the ``:param`` of the next parameter."""
    lines = [f"def {function}(self, {', '.join(params)}):", f'    """{" ".join(words[:3])}', ""]
    for i, name in enumerate(docs):
        lines.append(f"    :param {name}: {words[3 + 2 * i]} {words[4 + 2 * i]}")
    return "\n".join(lines) + "\n    :param"


def make_docstring(n: int, seed: int, names: list[str], words: list[str]) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        picked = rng.sample(names, PARAMS + DESCRIBED + 1)
        function, params, others = picked[0], picked[1 : PARAMS + 1], picked[PARAMS + 1 :]
        text = rng.sample(words, 3 + 2 * DESCRIBED)
        clean = prompt(function, params, params[:DESCRIBED], text)
        corrupted = prompt(function, params, others, text)
        head = clean.index("(")
        at = [clean.index(f" {p}", head) for p in params[:DESCRIBED]]
        doc = [clean.index(f":param {p}:") + len(":param") for p in params[:DESCRIBED]]
        positions = tuple(zip(NAMED[:3], at, strict=True)) + tuple(
            zip(NAMED[3:6], doc, strict=True)
        )
        answer = " " + params[DESCRIBED]
        wrong = tuple(" " + p for j, p in enumerate(params) if j != DESCRIBED)
        out.append(Example(clean, corrupted, answer, wrong, f"docstring #{i}", words=positions,
                           positions=(("END", -1),)))  # fmt: skip
    return out


def corpus() -> list[str]:
    """Every name and word in the prompt's shape: enough text to train a tokenizer on."""
    lines = []
    for i in range(len(NAMES)):
        names = [NAMES[(i + k) % len(NAMES)] for k in range(PARAMS + 1)]
        words = [WORDS[(i + k) % len(WORDS)] for k in range(3 + 2 * DESCRIBED)]
        lines.append(prompt(names[0], names[1:], names[1 : DESCRIBED + 1], words))
    return lines


def examples(spec: DocstringTaskSpec, count: CountTokens) -> list[Example]:
    """Prompts of the names and words that are one token for this tokenizer, so clean and
    corrupted have the same token count."""
    names = [x for x in NAMES if count(f" {x}") == 1]
    words = [x for x in WORDS if count(f" {x}") == 1]
    if len(names) < PARAMS + DESCRIBED + 1 or len(words) < 3 + 2 * DESCRIBED:
        raise TaskError(
            f"task=docstring: this model's tokenizer reads {len(names)} of the task's "
            f"parameter names as one token (it needs {PARAMS + DESCRIBED + 1}) and "
            f"{len(words)} of its words (it needs {3 + 2 * DESCRIBED}); use a model trained "
            "on code, or task=prompts with your own docstrings"
        )
    return make_docstring(spec.n_prompts, spec.seed, names, words)
