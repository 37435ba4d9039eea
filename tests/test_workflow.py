"""The workflow package: choices on dev data, stages, tuned variants, measurements, and the
guarantee that no choice reads the test split."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_model, make_tokenizer
from dist.rt_common import make_rows, random_vectors

from reptune.behaviours import BehaviourSpec
from reptune.extract import measure_residual_norms
from reptune.pairs import ContrastivePair
from reptune.training import RepTuneConfig
from reptune.workflow import (
    BehaviourArguments,
    DevSelection,
    ModelArguments,
    StageRunner,
    best_layer,
    choose_best,
    heldout_separation,
    layer_window,
    load_variant,
    perplexity_rows,
    split_dev_test,
    train_variant,
)
from reptune.workflow import behaviour as behaviour_module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny Llama and tokenizer saved as a folder, loadable by ModelArguments."""
    root = tmp_path_factory.mktemp("workflow")
    make_model("llama", n_layers=4, hidden=32, context=512).save_pretrained(root / "tiny")
    make_tokenizer(pad=True).save_pretrained(root / "tiny")
    return root


def test_choices_by_hand():
    assert best_layer({4: 0.9, 8: 1.0, 12: 1.0}) == 8
    assert best_layer({4: 1.0, 8: 1.0}, tie_break={8: 0.7, 4: 0.2}) == 8
    assert layer_window(10, range(30), 3) == [9, 10, 11]
    assert layer_window(29, range(30), 3) == [27, 28, 29]
    assert layer_window(0, [0, 2, 4], 3) == [0, 2]
    rows = [{"c": 0.1, "h": 0.5}, {"c": -0.2, "h": 0.7}, {"c": 0.2, "h": 0.7}]
    assert choose_best(rows, lambda r: r["h"], lambda r: abs(r["c"])) == rows[1]
    dev, test = split_dev_test(list(range(10)), 3, 4)
    assert dev == [0, 1, 2] and test == [3, 4, 5, 6]
    with pytest.raises(ValueError, match="nothing is left for the test split"):
        split_dev_test([1, 2], 2)


def test_heldout_separation_equals_a_hand_count():
    model, tok = make_model("llama", n_layers=4), make_tokenizer()  # layer 2 is not the last
    pairs = [ContrastivePair(f"I love day {i}", f"I hate day {i}") for i in range(5)]
    vecs = random_vectors(32, [0, 2])
    acc = heldout_separation(model, tok, vecs, pairs, -1, batch_size=2)
    for layer in (0, 2):
        wins = 0
        for pair in pairs:
            acts = []
            for text in (pair.positive, pair.negative):
                with torch.no_grad():
                    out = model(**tok(text, return_tensors="pt"), output_hidden_states=True)
                acts.append(out.hidden_states[layer + 1][0, -1])
            wins += float((acts[0] - acts[1]) @ vecs[layer]) > 0
        assert acc[layer] == pytest.approx(wins / len(pairs))


def test_stages_skip_rerun_and_drop_stale_markers(tmp_path):
    stages = StageRunner(tmp_path)
    calls = []
    assert stages.run("a", lambda: calls.append(1) or {"x": 1}, {"s": 1}) == {"x": 1}
    assert stages.run("a", lambda: calls.append(2) or {"x": 2}, {"s": 1}) == {"x": 1}
    assert calls == [1] and stages.skipped == ["a"]

    def crash():
        raise RuntimeError("half-way")

    with pytest.raises(RuntimeError):
        stages.run("a", crash, {"s": 2})  # new settings: reruns, and crashes
    assert not stages.marker("a").exists()  # no marker claims the old result for new settings
    assert StageRunner(tmp_path).run("a", lambda: {"x": 3}, {"s": 2}) == {"x": 3}


def test_model_arguments_build_one_lora_config():
    args = RepTuneConfig(output_dir="o", rep_layers=[1, 2], retain_weight=1.0, retain_layers=[3])
    config = ModelArguments(lora_r=4, lora_target_modules="q_proj,v_proj").peft_config(args)
    assert config.r == 4 and set(config.target_modules) == {"q_proj", "v_proj"}
    assert config.layers_to_transform == [0, 1, 2, 3]  # up to the deepest rep or retain layer
    assert (
        ModelArguments(finetune="layers").peft_config(
            RepTuneConfig(output_dir="o", train_layers=[1])
        )
        is None
    )
    with pytest.raises(ValueError, match="needs train_layers"):
        ModelArguments(finetune="layers").peft_config(args)
    with pytest.raises(ValueError, match="use lora_layers"):
        ModelArguments().peft_config(RepTuneConfig(output_dir="o", train_layers=[1]))
    with pytest.raises(ValueError, match="all-linear"):
        ModelArguments(lora_target_modules=["all-linear"]).peft_config(args)
    with pytest.raises(ValueError, match="finetune must be one of"):
        ModelArguments(finetune="qlora")


def test_dev_selection_keeps_the_best_snapshot_and_loads_back(tiny, tmp_path):
    margs = ModelArguments(model=str(tiny / "tiny"), lora_target_modules=["q_proj", "v_proj"])
    targs = RepTuneConfig(
        output_dir=str(tmp_path / "t"),
        use_cpu=True,
        report_to=[],
        disable_tqdm=True,
        save_strategy="no",
        learning_rate=0.05,
        per_device_train_batch_size=4,
        max_steps=4,
        rep_positions="-2",
        rep_layers=[1],
    )
    seen = []

    def score(model):  # prefers step 2: -|step - 2|, read off the weights' drift
        seen.append(float(sum(p.abs().sum() for n, p in model.named_parameters() if "lora_B" in n)))
        return -abs(len(seen) - 2)

    vecs = random_vectors(32, [1])
    info = train_variant(
        margs, targs, vecs, make_rows(8), tmp_path / "v", select=DevSelection(score, every=1)
    )
    assert info["chosen_step"] == 2 and sorted(info["dev_scores"]) == [1, 2, 3, 4]
    assert len(set(seen)) == 4  # four different snapshots were scored
    model, _ = load_variant(margs, tmp_path / "v")
    drift = float(sum(p.abs().sum() for n, p in model.named_parameters() if "lora_B" in n))
    assert drift == pytest.approx(seen[1], rel=1e-5)  # the saved adapter is step 2's
    merged, _ = load_variant(margs, tmp_path / "v", merge=True)
    batch = make_tokenizer(pad=True)(["hello there"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, model(**batch).logits, atol=1e-5, rtol=0)
    settings = json.loads((tmp_path / "v" / "reptune_config.json").read_text())
    assert settings["base_model"] == str(tiny / "tiny") and settings["max_steps"] == 4


def test_perplexity_rows_carry_their_own_intervals():
    model, other, tok = make_model("llama"), make_model("llama", seed=2), make_tokenizer()
    text = " ".join(r["prompt"] for r in make_rows(20))
    rows = perplexity_rows({"base": (model, tok), "other": (other, tok)}, text, 32, 16)
    base, second = rows
    assert base["perplexity_low"] <= base["perplexity"] <= base["perplexity_high"]
    assert second["perplexity_low"] <= second["perplexity"] <= second["perplexity_high"]
    assert "difference" not in base
    assert second["difference"] == pytest.approx(second["perplexity"] - base["perplexity"])
    assert second["difference_low"] <= second["difference"] <= second["difference_high"]


def test_no_choice_reads_the_test_prompts(tiny, tmp_path, monkeypatch):
    """Poisoning the test split changes nothing chosen, and nothing scores a test prompt before
    the evaluation stage."""
    from reptune.behaviours import load_sentiment_pairs

    dev = ["Describe your morning.", "Tell me about a street.", "Describe a Tuesday."]
    clean = ["Describe a river.", "Tell me about a bus.", "Describe a market."]
    poison = ["POISON " + "zz " * 30, "POISON bad bad bad", "POISON"]
    scored: list[str] = []

    def spec(test):
        def score(judge, tok, texts, prompts):
            scored.extend(prompts)
            return [min(1.0, 0.1 + len(t) / 100) for t in texts]

        return BehaviourSpec(
            "poisoned",
            load_sentiment_pairs,
            lambda: [r["prompt"] for r in make_rows(6)],
            lambda: dev + test,
            score,
            "Be positive.",
        )

    margs = ModelArguments(model=str(tiny / "tiny"), lora_target_modules=["q_proj", "v_proj"])
    targs = RepTuneConfig(
        output_dir=str(tmp_path / "t"),
        use_cpu=True,
        report_to=[],
        disable_tqdm=True,
        save_strategy="no",
    )
    judge = tmp_path / "judge"  # the judge LM: a tiny model of another family
    make_model("gpt2", n_layers=2, hidden=32, context=1024).save_pretrained(judge)
    make_tokenizer(pad=True).save_pretrained(judge)
    bargs = BehaviourArguments(
        judge_model=str(judge),
        judge_dtype="float32",
        judge_answer_tokens=8,
        relevance_others=1,
        bootstrap_resamples=200,
        layers=[1, 2],
        steer_layers=[1, 2],
        coefficients=[0.5, 1.0],
        dev_prompts=3,
        test_prompts=3,
        new_tokens=4,
        train_prompts=6,
        row_tokens=4,
        sft_steps=2,
        cosine_steps=2,
        steer_steps=2,
        select_every=1,
        perplexity_window=32,
        perplexity_stride=16,
    )
    results = {}
    for name, test in (("clean", clean), ("poisoned", poison)):
        monkeypatch.setattr(BehaviourArguments, "spec", lambda self, test=test: spec(test))
        scored.clear()
        stages = StageRunner(tmp_path / name)

        def spy(stage, fn, settings=None, run=stages.run, test=test, **kw):
            if stage.endswith("_evaluate"):
                assert not set(scored) & set(test), "a test prompt was scored before evaluation"
            return run(stage, fn, settings, **kw)

        stages.run = spy
        results[name] = behaviour_module.run_behaviour(bargs, margs, targs, stages)
        assert set(scored) & set(test)  # the evaluation did read them
    clean_res, poisoned_res = results["clean"], results["poisoned"]
    assert clean_res["chosen"] == poisoned_res["chosen"]
    assert clean_res["prompting"] == poisoned_res["prompting"]
    for variant in bargs.variants:
        a, b = clean_res["trained"][variant], poisoned_res["trained"][variant]
        assert a["chosen"] == b["chosen"] and a["checkpoints"] == b["checkpoints"]
    assert clean_res["evaluated"]["summary"] != poisoned_res["evaluated"]["summary"]


def test_residual_norms_recorded_for_the_workflows_vectors():
    model, tok = make_model("llama"), make_tokenizer()
    norms = measure_residual_norms(model, tok, ["hello there", "a fox"], [1, 2])
    assert set(norms) == {1, 2} and all(v > 0 for v in norms.values())
