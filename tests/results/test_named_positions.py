"""Named positions: IOI's S1, IO, S2 and END found in each prompt, so a map over
mixed-template prompts aggregates the same word, not the same token index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import sweep
from sweep.analysis import top_cells
from sweep.errors import ConfigError, TaskError
from sweep.models import load_model
from tests.helpers import ioi_rows, native_prompts, spec_of, write_task

NAMES = ["S1", "IO", "S2", "END"]
IOI = ["model=native", "model.native.n_layers=2", "task=ioi", "task.templates=all",
       "task.n_prompts=8", "task.seed=1", "runner.progress=false"]  # fmt: skip


def hand_positions(model, clean: str, answer_id: int, wrong_id: int) -> dict[str, int]:
    """Where the names are, found from the tokens alone (not from the task's own table)."""
    tokens = model.to_tokens(clean)[0].tolist()
    subject = [i for i, t in enumerate(tokens) if t == wrong_id]
    return {"S1": subject[0], "IO": tokens.index(answer_id), "S2": subject[-1],
            "END": len(tokens) - 1}  # fmt: skip


def hand_patch(model, cache, corrupted: str, where: tuple[int, int, int], ids) -> float:
    """Logit difference of the corrupted prompt with one head's z at one position (of one
    layer) taken from the clean prompt's cache: TransformerLens hooks, one prompt at a time."""
    layer, pos, head = where
    hook = f"blocks.{layer}.attn.hook_z"

    def patch(act: torch.Tensor, hook: object) -> torch.Tensor:
        act[0, pos, head] = cache[hook.name][0, pos, head]  # type: ignore[attr-defined]
        return act

    with torch.no_grad():
        logits = model.run_with_hooks(model.to_tokens(corrupted), fwd_hooks=[(hook, patch)])
    return float(logits[0, -1, ids[0]] - logits[0, -1, ids[1]])


def test_a_map_over_named_positions_equals_a_hand_aggregation_over_mixed_templates(
    tmp_path: Path,
) -> None:
    over = [*IOI, "grid.components=[z_by_pos]", "grid.positions=[S1,IO,S2,END]",
            f"store.path={tmp_path / 'named.zarr'}"]  # fmt: skip
    ds = sweep.open_results(sweep.run(over))
    model = load_model(spec_of(over).model)

    assert list(ds["pos"].values) == NAMES
    assert len(set(ds["prompt_length"].values.tolist())) > 1  # templates of several lengths
    assert len(set(ds["template"].values.tolist())) > 1
    hand = np.zeros((2, 4, 4, 8))  # layer, named position, head, prompt
    index = ds["position_index"].values
    for p in range(8):
        ids = (int(ds["answer_id"][p]), int(ds["wrong_id"][p]))
        clean, corrupted = str(ds["clean_text"][p].values), str(ds["corrupted_text"][p].values)
        at = hand_positions(model, clean, *ids)
        _, cache = model.run_with_cache(model.to_tokens(clean))
        assert [at[n] for n in NAMES] == index[p].tolist()  # the stored token indices
        for layer in range(2):
            for j, name in enumerate(NAMES):
                for head in range(4):
                    hand[layer, j, head, p] = hand_patch(
                        model, cache, corrupted, (layer, at[name], head), ids
                    )
    # S2 sits at different token indices across these prompts: an index would mix words.
    assert len(set(index[:, NAMES.index("S2")].tolist())) > 1
    got = ds["z_by_pos"].sel(metric="logit_diff").transpose("layer", "pos", "head", "prompt")
    np.testing.assert_allclose(got.values, hand, atol=1e-4)
    np.testing.assert_allclose(got.mean("prompt").values, hand.mean(-1), atol=1e-4)
    for name in NAMES:  # the clean token at a named position is that word in every prompt
        tokens = ds["clean_token"].sel(pos=name).values
        if name in ("S1", "S2"):
            assert list(tokens) == list(ds["wrong"].values)
        if name == "IO":
            assert list(tokens) == list(ds["answer"].values)


def test_a_token_index_sweep_names_its_positions_per_prompt(tmp_path: Path) -> None:
    over = [*IOI, "grid.components=[resid_pre]", f"store.path={tmp_path / 'index.zarr'}"]
    ds = sweep.open_results(sweep.run(over))
    names = ds["position_name"].values
    for p in range(8):
        n = int(ds["prompt_length"][p])
        assert names[p, n - 1] == "END" and (names[p, n:] == "").all()
        s1 = int(np.flatnonzero(names[p] == "S1")[0])
        assert names[p, s1 + 1] == "S1+1"
        assert ds["clean_token"].values[p, s1] == ds["wrong"].values[p]
        assert sorted(x for x in names[p] if x) == sorted(["S1", "S1+1", "IO", "S2", "END"])


def test_a_task_file_names_its_own_positions(tmp_path: Path) -> None:
    rows = ioi_rows(4)  # "..., [s] gave a drink to": the subject is 5th from the end
    for r, template in zip(rows, (0, 0, 3, 3), strict=True):
        r["positions"] = {"S2": -5, "END": -1}
        r["template"] = template
    rows[3]["positions"] = {"END": -1}  # a prompt without S2: that cell is missing for it
    task = write_task(tmp_path / "t.jsonl", rows)
    over = [*native_prompts(task, 2), "grid.components=[resid_pre]", "grid.positions=[S2,END]",
            "runner.progress=false", f"store.path={tmp_path / 's.zarr'}"]  # fmt: skip
    ds = sweep.open_results(sweep.run(over))
    assert list(ds["template"].values) == [0, 0, 3, 3]
    n = int(ds["prompt_length"][0])
    assert ds["position_index"].values.tolist() == [[n - 5, n - 1]] * 3 + [[-1, n - 1]]
    s2 = ds["resid_pre"].sel(pos="S2", metric="logit_diff")
    assert s2.notnull().sum("prompt").values.tolist() == [3, 3]  # prompt 3 has no S2
    assert ds["clean_token"].sel(pos="S2").values[:3].tolist() == [r["wrong"] for r in rows[:3]]
    top = top_cells(ds, 4, min_prompts=1)  # named positions in the table, n per name
    assert sorted(zip(top["pos"], top["n"], strict=True)) == [("END", 4)] * 2 + [("S2", 3)] * 2


@pytest.mark.parametrize(
    ("positions", "message"),
    [
        ({"3": 1}, r"t.jsonl:1: position name '3' must be a word"),
        ({"IO": "x"}, r"t.jsonl:1: position 'IO' is 'x'; give a token index"),
        ([1, 2], r"t.jsonl:1: positions must map names to token indices"),
    ],
)
def test_bad_named_positions_in_a_task_file_name_the_line(
    tmp_path: Path, positions: object, message: str
) -> None:
    rows = ioi_rows(2)
    rows[0]["positions"] = positions  # type: ignore[assignment]
    task = write_task(tmp_path / "t.jsonl", rows)
    with pytest.raises(TaskError, match=message):
        spec_of(native_prompts(task))


def test_a_position_past_the_prompt_is_refused_with_its_line(tmp_path: Path) -> None:
    rows = ioi_rows(2)
    rows[1]["positions"] = {"IO": 40}
    task = write_task(tmp_path / "t.jsonl", rows)
    over = [*native_prompts(task, 1), f"store.path={tmp_path / 's.zarr'}"]
    with pytest.raises(TaskError, match=r"t.jsonl:2: position IO is 40, but the clean prompt"):
        sweep.run(over)


def test_an_unknown_name_is_refused_before_a_model_loads(tmp_path: Path) -> None:
    task = tmp_path / "t.jsonl"
    task.write_text(json.dumps({**ioi_rows(1)[0], "positions": {"IO": 2}}) + "\n")
    with pytest.raises(ConfigError, match=r"grid.positions: \['S2'\] are not named .*it names IO"):
        spec_of([*native_prompts(task), "grid.positions=[IO,S2]"])
    with pytest.raises(ConfigError, match=r"it names S1, S1\+1, IO, S2, END"):
        spec_of(["task=ioi", "grid.positions=[S3]"])
