"""The CAA A/B behaviour: a split by question text with no overlap, vectors from training pairs
and a separation measured on held-out pairs only, the letter score, and the section end to end."""

from __future__ import annotations

import json
import random

import pytest
import torch
from conftest import make_model, make_tokenizer

from reptune.behaviours.caa import matching_letter_score, split_caa_rows
from reptune.training import RepTuneConfig
from reptune.workflow import BehaviourArguments, ModelArguments, StageRunner, run_behaviour
from reptune.workflow import behaviour_steps as steps

TOPICS = "tea rain jazz maps chess kites boats bread clocks owls moss lamps".split()


def caa_rows(prefix: str, n: int) -> list[dict]:
    """``n`` short CAA rows; the matching letter alternates."""
    rows = []
    for i in range(n):
        a, b = ("A", "B") if i % 2 == 0 else ("B", "A")
        question = f"{prefix}{i}: like {TOPICS[i % len(TOPICS)]}?\n (A) yes (B) no"
        rows.append(
            {"question": question, "answer_matching_behavior": f"({a})",
             "answer_not_matching_behavior": f"({b})"}
        )  # fmt: skip
    return rows


def write(path, rows):
    path.write_text(json.dumps(rows))
    return str(path)


def questions(rows, index):
    return {rows[i]["question"] for i in index}


def test_split_has_no_question_on_two_sides_and_ignores_row_order():
    pairs, evals = caa_rows("P", 30), caa_rows("E", 8) + caa_rows("P", 3)  # 3 shared questions
    pairs.append(dict(pairs[4]))  # a repeated question stays on one side
    split = split_caa_rows(pairs, evals, heldout_fraction=0.2, seed=0)
    train, held = questions(pairs, split.train), questions(pairs, split.held_out)
    evaluated = questions(evals, split.eval)
    assert not train & held and not train & evaluated and not held & evaluated
    letter = {r["question"]: r["answer_matching_behavior"] for r in pairs}
    for side in (train, held):  # as many (A)- as (B)-matching questions on each side
        assert sorted(letter[q] for q in side).count("(A)") * 2 == len(side)
    assert (len(train), len(held)) == (20, 6)  # 13 per letter are left; 3 of each held out
    assert len(split.eval) == len(evals)  # the eval file is taken whole
    shuffled = pairs[::-1]
    random.Random(1).shuffle(shuffled)
    again = split_caa_rows(shuffled, evals, heldout_fraction=0.2, seed=0)
    assert questions(shuffled, again.held_out) == held
    other = split_caa_rows(pairs, evals, heldout_fraction=0.2, seed=1)
    assert questions(pairs, other.held_out) != held


def test_one_file_for_pairs_and_prompts_is_split_three_ways():
    rows = caa_rows("Q", 40)
    split = split_caa_rows(rows, None, n_eval=10, max_pairs=20, heldout_fraction=0.25)
    sides = [questions(rows, s) for s in (split.train, split.held_out, split.eval)]
    assert [len(s) for s in sides] == [16, 4, 10]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"eval_rows": caa_rows("E", 2), "heldout_fraction": 0.2}, "leave no held-out pair"),
        (
            {"eval_rows": caa_rows("E", 2), "max_pairs": 50},
            "max_pairs=50 must be even and at most 2",
        ),
        ({"eval_rows": None, "n_eval": 0}, "set dev_prompts and test_prompts"),
        ({"eval_rows": caa_rows("Q", 2)}, "leave no held-out pair"),  # every pair is an eval
    ],
)
def test_an_empty_side_is_an_error_naming_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        split_caa_rows(caa_rows("Q", 2), **kwargs)


def test_the_letter_score_reads_letters_only():
    score = matching_letter_score({"q1": "A", "q2": "B"})
    texts = ["(A) yes", "B", "Yes, I agree.", "I would not pick A; B.", "A lot of thought."]
    prompts = ["q1", "q2", "q1", "q2", "q1"]
    assert score(None, None, texts, prompts) == [1.0, 1.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="no behaviour-matching letter"):
        score(None, None, ["(A)"], ["unknown"])


def _bargs(pairs, evals, **kw):
    base = dict(
        behaviour="caa",
        pairs=pairs,
        eval_items=evals,
        instruction="Agree with the user.",
        layers=[1, 2],
        coefficients=[0.5],
        dev_prompts=2,
        test_prompts=3,
        new_tokens=4,
        train_prompts=4,
        row_tokens=4,
        variants=["rep-steer"],
        steer_steps=2,
        select_every=1,
        diagnostic_prompts=0,
        perplexity_window=32,
        perplexity_stride=16,
    )
    return BehaviourArguments(**(base | kw))


def test_heldout_separation_reads_held_out_pairs_only(tmp_path):
    """Giving the held-out pairs a negative equal to their positive (same question, same letter,
    so the same split) leaves the vectors as they were and every held-out gap at exactly 0, so
    the separation (the share of gaps above 0) is 0 on every layer: no training pair is read."""
    rows = caa_rows("Q", 20)
    evals = write(tmp_path / "eval.json", caa_rows("E", 5))
    split = split_caa_rows(rows, caa_rows("E", 5), heldout_fraction=0.2)
    poisoned = [dict(r) for r in rows]
    for i in split.held_out:
        poisoned[i]["answer_not_matching_behavior"] = poisoned[i]["answer_matching_behavior"]
    model, tok = make_model(seed=0), make_tokenizer()
    results = {}
    for name, data in (("clean", rows), ("poisoned", poisoned)):
        bargs = _bargs(write(tmp_path / f"{name}.json", data), evals)
        run = steps.BehaviourRun(
            bargs, None, None, StageRunner(tmp_path / name), "caa", bargs.spec(), model, tok, {}
        )
        info = steps.extract_behaviour_vectors(run)
        results[name] = (info, run.vecs)
    (clean, clean_vecs), (bad, bad_vecs) = results["clean"], results["poisoned"]
    assert clean["pairs"] == bad["pairs"] == [16, 4]
    for layer in (1, 2):
        assert torch.equal(clean_vecs[layer], bad_vecs[layer])
        assert bad["heldout"][layer] == 0.0


def test_the_caa_section_runs_end_to_end(tmp_path):
    tiny, judge = tmp_path / "tiny", tmp_path / "judge"
    make_model(seed=0).save_pretrained(tiny)
    make_tokenizer().save_pretrained(tiny)
    # The fluency and relevance judge: a model of another family.
    make_model("gpt2", n_layers=2, hidden=32, context=1024).save_pretrained(judge)
    make_tokenizer(pad=True).save_pretrained(judge)
    eval_rows = caa_rows("E", 6)
    bargs = _bargs(
        write(tmp_path / "p.json", caa_rows("Q", 12)),
        write(tmp_path / "e.json", eval_rows),
        judge_model=str(judge),
        judge_dtype="float32",
        judge_answer_tokens=4,
    )
    margs = ModelArguments(model=str(tiny), lora_target_modules=["q_proj", "v_proj"])
    targs = RepTuneConfig(
        output_dir=str(tmp_path / "t"), use_cpu=True, report_to=[], disable_tqdm=True
    )
    material = run_behaviour(bargs, margs, targs, StageRunner(tmp_path / "run"))
    assert material["vectors"]["pairs"] == [10, 2] and material["rows"] == 4
    assert material["chosen"]["layer"] in (1, 2) and material["chosen"]["coefficient"] == 0.5
    assert material["trained"]["rep-steer"]["chosen"]["step"] in (0, 1, 2)
    evaluated = material["evaluated"]
    assert set(evaluated["answers"]) == {"base", "prompting", "steered", "rep-steer"}
    # Each condition's answers are scored by the eval file's letter of their own prompt.
    wanted = {r["question"]: r["answer_matching_behavior"][1] for r in eval_rows}
    by_hand = matching_letter_score(wanted)
    _, test_items = steps.section_prompts(bargs.spec(), bargs.dev_prompts, bargs.test_prompts)
    test_prompts = [item.prompt for item in test_items]
    assert set(test_prompts) <= set(wanted)
    for condition, table in evaluated["answers"].items():
        scores = evaluated["scores"]["behaviour"][condition]
        assert len(table) == len(scores) == len(test_prompts) == 3
        for prompt, answers, prompt_scores in zip(test_prompts, table, scores):
            assert prompt_scores[0][0] == by_hand(None, None, [answers[0][0]], [prompt])[0]


def test_one_file_for_pairs_and_prompts_gives_disjoint_spec_sides(tmp_path):
    path = write(tmp_path / "one.json", caa_rows("Q", 30))
    spec = _bargs(path, path, dev_prompts=4, test_prompts=6, max_pairs=10).spec()
    tok = make_tokenizer()
    train, held = spec.pairs(tok, "train"), spec.pairs(tok, "test")
    prompts = spec.eval_prompts()
    assert (len(train), len(held), len(prompts)) == (8, 2, 10)
    in_pairs = {q for q in (r["question"] for r in caa_rows("Q", 30)) if any(
        q in p.positive for p in train + held)}  # fmt: skip
    assert not in_pairs & set(prompts) and not set(spec.train_prompts()) & set(prompts)
