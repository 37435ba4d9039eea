"""The prompt objective: the target is the frozen model's activation with the behaviour
instruction in context, aligned over the response; its rows come from the prompted model."""

from __future__ import annotations

import pytest
import torch
from dist.rt_common import (
    GradCapture,
    make_args,
    make_rows,
    make_tokenizer,
    random_vectors,
    sequential,
    tiny_model,
)

from reptune.extract import measure_residual_norms
from reptune.layers import find_layers
from reptune.training import PromptTargetCollator, RepTuneConfig, RepTuneTrainer, instructed_row
from reptune.training.prompt_target import prompted_targets

SHORT = "Be kind."
LONG = "You are a cheerful assistant. Answer every question with joy, warmth and a happy tone!"
PROMPT = dict(rep_target="prompt", rep_positions="all", rep_weight=1.0)


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def _trainer(tmp_path, tok, model=None, rows=None, **overrides):
    model = model if model is not None else tiny_model(init_lora_weights=False)
    settings = {**PROMPT, "target_instruction": SHORT, "rep_layers": [1], **overrides}
    args = make_args(tmp_path, **settings)
    return RepTuneTrainer(
        model, args, train_dataset=rows or make_rows(4), processing_class=tok
    ), model


def test_prompt_config_checks(tmp_path, tok):
    with pytest.raises(ValueError, match="needs target_instruction"):
        RepTuneConfig(output_dir=str(tmp_path), rep_target="prompt")
    with pytest.raises(ValueError, match="only used with rep_target='prompt'"):
        RepTuneConfig(output_dir=str(tmp_path), target_instruction="Be kind.")
    with pytest.raises(ValueError, match="retain_weight=0"):
        RepTuneConfig(
            output_dir=str(tmp_path), rep_target="prompt", target_instruction="x", retain_weight=1
        )
    with pytest.raises(ValueError, match="'system', 'prefix' or 'template'"):
        RepTuneConfig(
            output_dir=str(tmp_path),
            rep_target="prompt",
            target_instruction="x",
            target_instruction_mode="suffix",
        )
    with pytest.raises(ValueError, match=r"must contain \{prompt\}"):
        RepTuneConfig(
            output_dir=str(tmp_path),
            rep_target="prompt",
            target_instruction="Be kind.",
            target_instruction_mode="template",
        )
    with pytest.raises(ValueError, match=r"\(user, assistant\) pair"):
        RepTuneConfig(
            output_dir=str(tmp_path),
            rep_target="prompt",
            target_instruction="Be kind.",
            target_examples=[["only a user turn"]],
        )
    with pytest.raises(ValueError, match="target_examples is only used"):
        RepTuneConfig(output_dir=str(tmp_path), target_examples=[["a", "b"]])
    with pytest.raises(ValueError, match="needs rep_layers"):
        _trainer(tmp_path, tok, rep_layers=None)
    # Vectors are only needed for the combined target: they need not cover the rep layers.
    args = make_args(tmp_path, **PROMPT, target_instruction=SHORT, rep_layers=[2])
    trainer = RepTuneTrainer(
        tiny_model(),
        args,
        vectors=random_vectors(32, [3]),
        train_dataset=make_rows(4),
        processing_class=tok,
    )
    assert trainer.rep_layers == [2]
    with pytest.raises(ValueError, match=r"rep_layers \[2\] have no steering vector"):
        RepTuneTrainer(
            tiny_model(),
            make_args(
                tmp_path,
                **PROMPT,
                target_instruction=SHORT,
                rep_layers=[2],
                steer_coefficient=0.1,
                coefficient_unit="raw",
            ),
            vectors=random_vectors(32, [3]),
            train_dataset=make_rows(4),
            processing_class=tok,
        )


EXAMPLES = [("Describe a cup.", "A lovely warm cup!"), ("And a chair?", "A comfy chair.")]
CONTEXTS = [
    (SHORT, "system", ()),
    (LONG, "system", ()),
    (SHORT, "prefix", ()),
    (LONG, "prefix", ()),
    ("{prompt} Answer in a happy way.", "template", ()),
    (SHORT, "system", EXAMPLES),
]


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize(("instruction", "mode", "examples"), CONTEXTS)
def test_target_is_the_frozen_models_activation_with_the_prompt(
    tmp_path, tok, padding_side, mode, instruction, examples
):
    """At every response token, the target equals the frozen model's activation at that token
    when it reads the prompted text alone (no padding, no batch), for any instruction length,
    a user-turn template and few-shot example exchanges."""
    trainer, model = _trainer(tmp_path, tok, rep_layers=[2], target_instruction=SHORT)
    collate = PromptTargetCollator(
        tok, instruction, mode, padding_side=padding_side, examples=examples
    )
    own_system = {"prompt": "Hi", "completion": "a much longer answer here", "system": "S"}
    rows = [*make_rows(3), own_system]
    batch = collate(rows)
    deeper = find_layers(model)[3].register_forward_hook(lambda *a: calls.append(1))
    calls = []
    try:
        targets = prompted_targets(trainer._reference, model, batch, batch["rep_mask"])[2]
    finally:
        deeper.remove()
    assert not calls  # the one reference pass stops after the deepest layer it needs
    real = batch["attention_mask"].bool()
    for i, row in enumerate(rows):
        plain_ids = batch["input_ids"][i][real[i]]
        prompted_ids, _ = collate.encode(instructed_row(row, instruction, mode, examples))
        if examples:  # the example exchanges are in the prompted input
            assert EXAMPLES[1][1] in tok.decode(prompted_ids)
        with torch.no_grad(), model.disable_adapter():
            alone = model(input_ids=torch.tensor([prompted_ids]), output_hidden_states=True)
        hidden = alone.hidden_states[3][0]  # block 2's output
        selected = batch["rep_mask"][i][real[i]]
        # The response is the assistant header, the answer and EOS: the last tokens of both.
        expected_text = "<|assistant|>" + row["completion"] + tok.eos_token
        assert tok.decode(plain_ids[selected]) == expected_text
        n = int(selected.sum())
        assert selected[-n:].all() and torch.equal(plain_ids[-n:], torch.tensor(prompted_ids[-n:]))
        got = targets[i][real[i]][selected]
        torch.testing.assert_close(got, hidden[-n:], rtol=1e-5, atol=1e-5)


def test_combined_target_adds_the_vector(tmp_path, tok):
    model = tiny_model(init_lora_weights=False)
    vecs = random_vectors(32, [1])
    vecs = vecs.with_residual_norms(
        measure_residual_norms(model, tok, [r["prompt"] for r in make_rows(4)], [1])
    )
    plain, _ = _trainer(tmp_path / "a", tok, model=model)
    args = make_args(
        tmp_path / "b", **PROMPT, target_instruction=SHORT, rep_layers=[1], steer_coefficient=0.5
    )
    combined = RepTuneTrainer(
        model, args, vectors=vecs, train_dataset=make_rows(4), processing_class=tok
    )
    batch = combined.data_collator(make_rows(3))
    mask = batch["rep_mask"]
    a = prompted_targets(plain._reference, model, batch, mask)[1]
    b = prompted_targets(combined._reference, model, batch, mask)[1]
    delta = 0.5 * vecs.direction(1, "residual_norm")
    torch.testing.assert_close(b[mask], a[mask] + delta, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lm_weight", [0.3, 0.0])
def test_gradient_accumulation_matches_one_big_batch(tmp_path, tok, lm_weight):
    rows = make_rows(4)
    grads, logs = [], []
    for bs, ga in ((4, 1), (1, 4)):
        args = make_args(
            tmp_path / f"ga{ga}-{lm_weight}",
            per_device_train_batch_size=bs,
            gradient_accumulation_steps=ga,
            max_steps=1,
            learning_rate=0.0,
            rep_layers=[1, 2],
            lm_weight=lm_weight,
            target_instruction=LONG,
            **PROMPT,
        )
        model = tiny_model(init_lora_weights=False)
        trainer = sequential(RepTuneTrainer(model, args, train_dataset=rows, processing_class=tok))
        capture = GradCapture()
        trainer.add_callback(capture)
        trainer.train()
        grads.append(capture.grads[0])
        logs.append(trainer.state.log_history[0])
    big, small = grads
    assert big.keys() == small.keys() and len(big) > 0
    assert max((big[k] - small[k]).abs().max().item() for k in big) <= 1e-5
    assert max(g.abs().max().item() for g in big.values()) > 1e-4
    for key in ("loss", "rep_loss", "prompt_distance_layer_1", "prompt_distance_layer_2"):
        assert logs[0][key] == pytest.approx(logs[1][key], rel=1e-5)


def _response_kl(p_logits, q_logits, mask):
    """Mean KL(p || q) of the next-token distributions over the selected positions."""
    p, q = p_logits.log_softmax(-1), q_logits.log_softmax(-1)
    return float((p.exp() * (p - q)).sum(-1)[mask].mean())


def _held_out_logits(model, collate, rows, prompted):
    batch = collate(rows)
    if prompted:
        feed = {k: batch[f"target_{k}"] for k in ("input_ids", "attention_mask", "position_ids")}
    else:
        feed = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    with torch.no_grad():
        logits = model(**feed).logits
    if prompted:  # onto the plain columns, as the trainer aligns them
        index = batch["target_index"].clamp_min(0).unsqueeze(-1).expand(-1, -1, logits.shape[-1])
        logits = torch.gather(logits, 1, index)
    return logits, batch["rep_mask"]


def _peaked_model():
    """A tiny Llama with larger initial weights: its next-token distributions are peaked
    enough for an instruction in context to move them measurably."""
    import transformers
    from conftest import make_model

    config = make_model("llama", n_layers=4, hidden=32).config
    config.initializer_range = 0.1
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def test_prompt_tuned_model_behaves_as_prompted_without_the_prompt(tmp_path, tok):
    """After tuning on rows the prompted model wrote, KL(prompted || tuned, no prompt) over the
    response of held-out prompts is at most 10% of KL(prompted || base)."""
    from reptune.workflow.variants import prompted_rows

    base, model = _peaked_model(), _peaked_model()
    subjects = ["the sky", "a dog", "the sea", "my day", "this film", "a claim", "the fox"]
    words = ["green", "sad", "happy", "true", "lazy", "quick"]
    prompts = [f"Is {s} {w}?" for s in subjects for w in words]
    train, held_out = prompts[::2] + prompts[1::4], prompts[3::4]
    rows = prompted_rows(base, tok, train, LONG, max_new_tokens=6)
    test_rows = prompted_rows(base, tok, held_out, LONG, max_new_tokens=6)
    assert len(rows) > 20 and len(test_rows) >= 8
    args = make_args(
        tmp_path,
        **PROMPT,
        target_instruction=LONG,
        rep_layers=[3],
        lm_weight=0.0,
        train_layers=[0, 1, 2, 3],
        learning_rate=1e-2,
        max_steps=120,
        per_device_train_batch_size=8,
    )
    trainer = RepTuneTrainer(model, args, train_dataset=rows, processing_class=tok)
    trainer.train()
    collate = PromptTargetCollator(tok, LONG)
    target, mask = _held_out_logits(base, collate, test_rows, prompted=True)
    plain, _ = _held_out_logits(base, collate, test_rows, prompted=False)
    tuned, _ = _held_out_logits(model, collate, test_rows, prompted=False)
    far, near = _response_kl(target, plain, mask), _response_kl(target, tuned, mask)
    assert far > 1e-3  # the instruction changes the distribution
    assert near <= 0.1 * far, (near, far)


def test_prompted_rows_are_the_prompted_models_answers_to_plain_prompts(tok):
    from conftest import make_model

    from reptune.evaluation.ab.scoring import generate_texts
    from reptune.training import instructed_chat
    from reptune.workflow.variants import prompted_rows

    model = make_model("llama", n_layers=2, hidden=32)
    prompts = ["Is the sky green?", "Describe my day."]
    rows = prompted_rows(model, tok, prompts, SHORT, "prefix", max_new_tokens=5)
    chats = [instructed_chat(tok, p, SHORT, "prefix") for p in prompts]
    assert chats[0].startswith("<|user|>" + SHORT + "\n\n" + prompts[0])
    answers = generate_texts(model, tok, chats, max_new_tokens=5)
    assert [r["prompt"] for r in rows] == [p for p, a in zip(prompts, answers) if a.strip()]
    assert [r["completion"] for r in rows] == [a.strip() for a in answers if a.strip()]
