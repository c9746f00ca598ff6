"""Multi-token answers, teacher forced: the sequence metrics against a loop over tokens,
node patching (both engines) against TransformerLens' patching on the teacher-forced
prompts, AtP through a hand-written metric's gradient, EAP against autograd through the
hooked model, and what is refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import edge_block, ioi_rows, native_prompts, padded, user_module, worker, write_task
from tl_reference import TL_FUNCTIONS

import sweep
from sweep.engine.edges import edge_values
from sweep.errors import ConfigError, TaskError
from sweep.interventions.resample import donors
from sweep.metrics import METRICS
from tests.edge_reference import eap_logit_diffs, edge_logit_diffs
from tests.edges.test_eap import w_nodes

SEQUENCE_METRICS = ("logprob", "loss", "prob", "kl")


def hand(name: str, logits: torch.Tensor, answers: list, clean: torch.Tensor) -> torch.Tensor:
    """Each row's metric by a loop over its answer's tokens: ``logits`` [row, T, vocab]
    whose last len(answer) positions predict the answer's tokens."""
    out = []
    for row, a, c in zip(logits, answers, clean, strict=True):
        first = row.shape[0] - len(a)
        total = sum(row[first + j].log_softmax(-1)[t] for j, t in enumerate(a))
        if name == "kl":
            per = [(c[j].softmax(-1) * (c[j].log_softmax(-1) - row[j].log_softmax(-1))).sum()
                   for j in range(first, row.shape[0])]  # fmt: skip
            total = sum(per)
        out.append({"logprob": total, "loss": -total, "prob": torch.exp(total)}.get(name, total))
    return torch.stack(out)


def test_each_sequence_metric_equals_a_loop_over_tokens() -> None:
    torch.manual_seed(0)
    logits, clean = (torch.randn(3, 4, 25, dtype=torch.float64) * 3 for _ in range(2))
    answers = [[3, 7, 1, 9], [2, 5], [11]]
    ids = torch.tensor([[-1] * (4 - len(a)) + a for a in answers])
    for name in SEQUENCE_METRICS:
        got = METRICS[name](logits, ids, torch.zeros(3, dtype=torch.long), clean)
        torch.testing.assert_close(got, hand(name, logits, answers, clean), rtol=0, atol=1e-12,
                                   msg=name)  # fmt: skip


def multi_rows(n: int = 4) -> list[dict]:
    """IOI rows whose answers are several tokens, of two lengths (the name, then a verb,
    or a verb and an object)."""
    rows = ioi_rows(n)
    for i, row in enumerate(rows):
        row["answer"] += " went" if i % 2 else " went home"
    return rows


def _over(tmp: Path, *extra: str) -> list[str]:
    task = write_task(tmp / "task.jsonl", multi_rows())
    return [*native_prompts(task), "runner.progress=false", "store.plots=false",
            f"store.path={tmp / 's.zarr'}", f"metric.names=[{','.join(SEQUENCE_METRICS)}]",
            *extra]  # fmt: skip


def _answers(w) -> list[list[int]]:
    return [[int(t) for t in row if t >= 0] for row in w.task.answer]


@pytest.mark.parametrize("engine", ["fast", "hooks"])
def test_a_sweep_of_multi_token_answers_equals_transformerlens_patching(
    tmp_path: Path, engine: str
) -> None:
    components = ("resid_pre", "z", "mlp_out")
    over = _over(tmp_path, f"grid.components=[{','.join(components)}]", f"runner.engine={engine}")
    ds = sweep.open_results(sweep.run(over)).load()
    w = worker(over)
    model, task, answers = w.model, w.task, _answers(w)
    assert task.reads == 5 and [len(a) for a in answers] == [5, 2, 5, 2]
    assert ds["answer_id"].dims == ("prompt", "answer_token")
    np.testing.assert_array_equal(ds["answer_id"].values, task.answer.numpy())
    # Teacher forcing: each prompt, then its answer's tokens but the last.
    clean_ids, corrupted_ids = padded(task)
    for i, row in enumerate(multi_rows()):
        for run, ids in (("clean", clean_ids), ("corrupted", corrupted_ids)):
            prompt = model.to_tokens(row[run])[0].tolist()
            forced = answers[i][:-1]
            assert ids[i, : len(prompt) + len(forced)].tolist() == prompt + forced
            assert int(task.lengths[i]) == len(prompt) + len(forced)
    pieces = model.to_str_tokens(multi_rows()[0]["answer"], prepend_bos=False)
    assert ds["clean_token"].values[0, 15:19].tolist() == pieces[:-1]
    lengths = task.lengths

    def read(logits: torch.Tensor) -> torch.Tensor:
        """[prompt, 5, vocab] each prompt's last five positions before its padding."""
        return torch.stack([logits[i, int(n) - 5 : int(n)] for i, n in enumerate(lengths)])

    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean_ids)
        clean_logits = read(model(clean_ids)).double()
    base = hand("logprob", clean_logits, answers, clean_logits)
    np.testing.assert_allclose(ds["clean_baseline"].sel(metric="logprob").values, base.numpy(),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    for name in SEQUENCE_METRICS:

        def metric(logits: torch.Tensor, name: str = name) -> torch.Tensor:
            return hand(name, read(logits).double(), answers, clean_logits)

        for component in components:
            with torch.no_grad():
                ref = TL_FUNCTIONS[component](model, corrupted_ids, clean_cache, metric,
                                              reduce="none").values.numpy()  # fmt: skip
            got = ds[component].sel(metric=name).values
            if component != "z":  # a position past a prompt's end is no cell
                inside = np.arange(got.shape[1])[:, None] < lengths[None, :]
                assert (np.isfinite(got) == inside[None]).all()
                got, ref = np.where(inside, got, 0.0), np.where(inside, ref, 0.0)
            np.testing.assert_allclose(got, ref, atol=2e-4, rtol=1e-4,
                                       err_msg=f"{name} {component} {engine}")  # fmt: skip
    assert np.nanmax(np.abs(ds["resid_pre"].sel(metric="logprob").values - base.numpy())) > 0.1


def test_atp_of_a_multi_token_answer_equals_autograd_through_the_hooked_model(
    tmp_path: Path,
) -> None:
    """resid_pre's AtP estimate minus the base run's metric is (clean - corrupted) times the
    answer log-probability's gradient at the corrupted run, from TransformerLens' own
    backward through the teacher-forced prompts."""
    over = [o for o in _over(tmp_path, "grid.components=[resid_pre]", "intervention=atp")
            if not o.startswith("metric.names")] + ["metric.names=[logprob]"]  # fmt: skip
    ds = sweep.open_results(sweep.run(over)).load()
    got = (ds["resid_pre"] - ds["corrupted_baseline"]).sel(metric="logprob").values
    w = worker(over)
    model, task, answers = w.model, w.task, _answers(w)
    clean_ids, corrupted_ids = padded(task)
    hooks = [f"blocks.{i}.hook_resid_pre" for i in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean_ids)
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):  # type: ignore[no-untyped-def]
        def hook(act: torch.Tensor, hook) -> torch.Tensor:  # type: ignore[no-untyped-def]
            act.retain_grad()
            seen[name] = act
            return act

        return hook

    with torch.enable_grad():
        logits = model.run_with_hooks(corrupted_ids, fwd_hooks=[(h, keep(h)) for h in hooks])
        score = _logprob(answers)
        total = sum(score(logits[p, : int(n)], p) for p, n in enumerate(task.lengths))
        total.backward()
    for layer, h in enumerate(hooks):
        want = ((clean_cache[h] - seen[h].detach()) * seen[h].grad).sum(-1)  # [prompt, pos]
        inside = np.arange(want.shape[1])[None, :] < task.lengths[:, None]
        mine = got[layer].T  # [prompt, pos]
        np.testing.assert_allclose(np.where(inside, mine, 0.0), np.where(inside, want, 0.0),
                                   atol=1e-4, rtol=1e-4, err_msg=h)  # fmt: skip
    assert np.nanmax(np.abs(got)) > 1e-2


def test_a_multi_token_wrong_leaves_the_answers_metrics_as_they_were(tmp_path: Path) -> None:
    """Only ``wrong`` several tokens: one read position, and the store keeps wrong's
    tokens along ``wrong_token``."""
    rows = ioi_rows(4)
    task = write_task(tmp_path / "one.jsonl", rows)
    many = write_task(tmp_path / "many.jsonl", [{**r, "wrong": r["wrong"] + " went"} for r in rows])
    common = ["runner.progress=false", "store.plots=false", "metric.names=[logprob,kl]",
              "grid.components=[resid_pre]"]  # fmt: skip
    one = sweep.open_results(sweep.run([*native_prompts(task), *common,
                                        f"store.path={tmp_path / 'one.zarr'}"]))  # fmt: skip
    two = sweep.open_results(sweep.run([*native_prompts(many), *common,
                                        f"store.path={tmp_path / 'two.zarr'}"]))  # fmt: skip
    assert (
        two["wrong_id"].dims == ("prompt", "wrong_token") and two.sizes["pos"] == one.sizes["pos"]
    )
    assert (two["wrong_id"].values >= 0).sum(1).tolist() == [2, 2, 2, 2]
    np.testing.assert_array_equal(two["resid_pre"].values, one["resid_pre"].values)


def test_resample_donors_share_the_prompts_and_the_answers_token_counts() -> None:
    lengths = torch.tensor([6, 6, 6, 6, 8, 8])
    forced = np.array([0, 2, 0, 2, 1, 1])  # 6 tokens: 6 of prompt, or 4 and 2 of answer
    d = donors(lengths, samples=20, seed=0, forced=forced)
    for i in range(6):
        same = {j for j in range(6) if (lengths[j], forced[j]) == (lengths[i], forced[i])}
        assert set(d[:, i].tolist()) == same - {i}
    with pytest.raises(TaskError, match=r"prompt 1 \(6 tokens, 2 of them its answer's\)"):
        donors(lengths[:3], samples=1, seed=0, forced=forced[:3])


HAND = '''
import torch


def hand_logprob(logits, answer, wrong, clean):
    """The answer's log-probability by a loop over rows and its tokens."""
    rows = []
    for i in range(logits.shape[0]):
        lp = logits[i].log_softmax(-1)
        rows.append(sum(lp[j, t] for j, t in enumerate(answer[i].tolist()) if t >= 0))
    return torch.stack(rows)
'''


@pytest.fixture
def hand_metric(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    user_module(tmp_path, monkeypatch, "seq_metrics", HAND)
    return "metric.custom=[seq_metrics:hand_logprob]"


def test_atp_of_a_multi_token_answer_follows_the_metrics_gradient(
    tmp_path: Path, hand_metric: str
) -> None:
    """AtP of the built-in logprob equals AtP of a hand-written loop (a custom metric,
    which gets [prompt, T, vocab] logits)."""
    over = [o for o in _over(tmp_path, "grid.components=[resid_pre,z_by_pos]", "intervention=atp",
                             hand_metric) if not o.startswith("metric.names")]  # fmt: skip
    ds = sweep.open_results(sweep.run([*over, "metric.names=[logprob]"]))
    for name in ("resid_pre", "z_by_pos"):
        mine = ds[name].sel(metric="logprob").values
        theirs = ds[name].sel(metric="hand_logprob").values
        np.testing.assert_allclose(mine, theirs, atol=1e-5, rtol=1e-5, err_msg=name)
        assert np.nanmax(np.abs(mine)) > 1e-3


def _logprob(answers: list[list[int]]):
    """The reference's metric: prompt ``p``'s answer log-probability from its logits
    [pos, vocab] at every position."""

    def score(logits: torch.Tensor, p: int) -> torch.Tensor:
        a = answers[p]
        first = logits.shape[0] - len(a)
        return sum(logits[first + j].log_softmax(-1)[t] for j, t in enumerate(a))

    return score


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_eap_of_a_multi_token_answer_equals_autograd_through_the_hooked_model(
    tmp_path: Path, direction: str
) -> None:
    over = _over(tmp_path, "grid=edges", "intervention=eap", f"intervention.direction={direction}")
    over = [o for o in over if not o.startswith("metric.names")] + ["metric.names=[logprob]"]
    ds = sweep.open_results(sweep.run(over)).load()
    base = ds.attrs["base_run"]
    got = (ds["edges"] - ds[f"{base}_baseline"]).sel(metric="logprob").values
    w = worker([*over[:4], "grid.components=[resid_pre]", "runner.engine=fast",
                "metric.names=[logprob]"])  # fmt: skip
    answers = _answers(w)
    nodes = {role: {n.name: n for n in w_nodes(w, role)} for role in ("receiver", "sender")}
    pairs = [(i, j) for i in range(got.shape[0]) for j in range(got.shape[1])
             if np.isfinite(got[i, j]).all()]  # fmt: skip
    edges = [(nodes["sender"][str(ds["sender"].values[j])],
              nodes["receiver"][str(ds["receiver"].values[i])]) for i, j in pairs]  # fmt: skip

    base_run = "corrupted" if direction == "denoise" else "clean"
    want = eap_logit_diffs(w.model, w.task, edges, base_run, score=_logprob(answers))
    have = np.stack([got[i, j] for i, j in pairs])
    assert {r.kind for _, r in edges} >= {"logits", "q", "mlp"}
    np.testing.assert_allclose(have, want, atol=1e-4 * max(1.0, np.abs(want).max()))


def test_a_circuit_of_a_multi_token_answer_runs_from_the_corrupted_to_the_clean_run(
    tmp_path: Path,
) -> None:
    """Noising the edges outside each circuit: with no edge kept the clean run reads as
    the corrupted run, with every edge kept as itself (teacher forced throughout)."""
    over = [o for o in _over(tmp_path) if not o.startswith(("metric.names", "store.path"))]
    over += ["metric.names=[logprob]"]
    scores = sweep.run([*over, "grid=edges", "intervention=eap", f"store.path={tmp_path / 'e'}"])
    ds = sweep.open_results(sweep.run([*over, "grid=circuit", f"grid.scores={scores}",
                                       "intervention=patch", "intervention.direction=noise",
                                       f"store.path={tmp_path / 'c'}"])).load()  # fmt: skip
    curve = ds["circuit"].sel(metric="logprob").values  # [size, prompt], smallest first
    base = {
        run: ds[f"{run}_baseline"].sel(metric="logprob").values for run in ("clean", "corrupted")
    }
    np.testing.assert_allclose(curve[0], base["corrupted"], atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(curve[-1], base["clean"], atol=1e-4, rtol=1e-5)
    assert np.abs(base["clean"] - base["corrupted"]).max() > 0.1


def test_exact_edges_of_a_multi_token_answer_equal_one_hooked_forward_per_edge(
    tmp_path: Path,
) -> None:
    over = _over(tmp_path, "grid.components=[resid_pre]", "runner.engine=fast")
    w = worker(over)
    _, every, block = edge_block(w, "corrupted")
    assert block.reads == 5
    got = edge_values(w.forward, block, every, ("logprob",), per_forward=7)[0].cpu().numpy()
    want = edge_logit_diffs(w.model, w.task, every, "corrupted", score=_logprob(_answers(w)))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-5)
    assert np.abs(want - want.mean(0)).max() > 1e-2  # edges differ: not a constant


@pytest.mark.parametrize(
    ("answer", "wrong", "metrics", "error", "says"),
    [
        (" Mary went", " John", "[logit_diff]", ConfigError,
         "task.jsonl:1: answer ' Mary went' is 2 tokens for this tokenizer; use logprob"),
        (" Mary", " John went", "[prob_diff]", ConfigError, ":1: wrong ' John went' is 2 tokens"),
        ("o Mary", " John", "[logprob]", TaskError,
         "answer 'o Mary' does not start a token after the clean prompt"),
        ("", " John", "[logprob]", TaskError, "missing or empty"),
    ],
)  # fmt: skip
def test_what_a_multi_token_answer_cannot_do_is_one_line(
    tmp_path: Path, answer: str, wrong: str, metrics: str, error: type, says: str
) -> None:
    rows = ioi_rows(2)
    rows[0].update(answer=answer, wrong=wrong)
    if answer.startswith("o"):  # the prompt ends inside the word the answer finishes
        rows[0].update(clean=rows[0]["clean"][:-1], corrupted=rows[0]["corrupted"][:-1])
    task = write_task(tmp_path / "task.jsonl", rows)
    with pytest.raises(error) as e:
        sweep.run([*native_prompts(task), f"store.path={tmp_path / 's.zarr'}",
                   f"metric.names={metrics}"])  # fmt: skip
    assert says in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "s.zarr").exists()


def test_a_task_mixing_sets_and_multi_token_answers_is_one_line(tmp_path: Path) -> None:
    rows = ioi_rows(2)
    rows[0]["answer"] = " Mary went"
    rows[1]["answer"] = [" Mary", " John"]
    rows[1]["wrong"] = " Kevin"
    task = write_task(tmp_path / "task.jsonl", rows)
    with pytest.raises(TaskError) as e:
        sweep.run([*native_prompts(task), f"store.path={tmp_path / 's.zarr'}",
                   "metric.names=[logprob]"])  # fmt: skip
    assert str(e.value).startswith(f"{task}:2: answer is a set, but {task}:1 gives")
    assert "\n" not in str(e.value) and not (tmp_path / "s.zarr").exists()
