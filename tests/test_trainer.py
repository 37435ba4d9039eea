import json

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
from transformers import Trainer, TrainingArguments

from reptune.hooks import intervene, recording
from reptune.training import (
    REPTUNE_CONFIG_NAME,
    REPTUNE_VECTORS_DIR,
    RepTuneCollator,
    RepTuneConfig,
    RepTuneTrainer,
)
from reptune.training.losses import cosine_to_vector
from reptune.vectors import SteeringVectors


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def _losses(trainer):
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


# -- collator ---------------------------------------------------------------------------------
def test_collator_masks_prompt_labels_and_builds_positions(tok):
    rows = make_rows(3)
    batch = RepTuneCollator(tok, rep_positions="-1", retain_positions="completion")(rows)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "rep_mask", "retain_mask"}
    for i, row in enumerate(rows):
        n = int(batch["attention_mask"][i].sum())
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (len(batch["labels"][i]) - n)
        labelled = (batch["labels"][i] != -100).nonzero().flatten()
        start = int(labelled[0])
        # the labels are the completion and EOS, the prompt went through the chat template
        assert tok.decode(batch["input_ids"][i, start:n]) == row["completion"] + tok.eos_token
        assert tok.decode(batch["input_ids"][i, :start]).endswith("<|assistant|>")
        assert batch["rep_mask"][i].nonzero().flatten().tolist() == [start - 1]
        assert batch["retain_mask"][i].nonzero().flatten().tolist() == list(range(start, n))
    pre = RepTuneCollator(tok, "prompt")([{"input_ids": [5, 6, 7, 8], "prompt_length": 3}])
    assert pre["labels"].tolist() == [[-100, -100, -100, 8]]
    assert pre["rep_mask"].tolist() == [[True, True, True, False]]
    with pytest.raises(ValueError, match="max_length"):
        RepTuneCollator(tok, -1, max_length=4)(rows)
    with pytest.raises(ValueError, match="'completion'"):
        RepTuneCollator(tok, -1)([{"prompt": "hi"}])


# -- configuration errors, before any training ------------------------------------------------
def test_config_rejects_bad_values(tmp_path):
    with pytest.raises(ValueError, match="unknown rep_target"):
        RepTuneConfig(output_dir=str(tmp_path), rep_target="sideways")
    with pytest.raises(ValueError, match="rep_weight"):
        RepTuneConfig(output_dir=str(tmp_path), rep_weight=-1)
    with pytest.raises(ValueError, match="unknown positions"):
        RepTuneConfig(output_dir=str(tmp_path), rep_positions="middle")
    with pytest.raises(ValueError, match="REGEX=LR"):
        RepTuneConfig(output_dir=str(tmp_path), param_lrs=["v_proj"])
    with pytest.raises(ValueError, match="nothing to train"):
        RepTuneConfig(output_dir=str(tmp_path), rep_weight=0, lm_weight=0)
    args = RepTuneConfig(output_dir=str(tmp_path), vectors=random_vectors(8, [1]))
    assert args.to_dict()["vectors"] == "<SteeringVectors layers=[1]>"
    json.dumps(args.to_dict())  # loggers serialise the arguments


def test_bad_setups_fail_before_training(tmp_path, tok):
    model, rows = tiny_model(), make_rows(8)

    def build(vectors=None, **kw):
        return RepTuneTrainer(
            model,
            make_args(tmp_path, **kw),
            vectors=vectors,
            train_dataset=rows,
            processing_class=tok,
        )

    vecs = random_vectors(32, range(4))
    with pytest.raises(ValueError, match="out of range"):
        build(vecs, rep_layers=[7])
    with pytest.raises(ValueError, match="another model"):
        build(random_vectors(48, [1]))
    with pytest.raises(ValueError, match="another model"):
        build(random_vectors(32, [9]))
    with pytest.raises(ValueError, match="selects no token in 8 of 8 train rows"):
        build(vecs, rep_positions="-500")
    with pytest.raises(ValueError, match="needs steering vectors"):
        build(None)
    with pytest.raises(ValueError, match="have no steering vector"):
        build(random_vectors(32, [1]), rep_layers=[1, 2])
    with pytest.raises(ValueError, match="matches no trainable parameter"):
        build(vecs, param_lrs=["nonexistent=1e-3"])
    with pytest.raises(ValueError, match="train_layers"):
        build(vecs, train_layers=[1])  # full fine-tuning of layers is not for a PEFT model


# -- exactness ----------------------------------------------------------------------------------
def test_token_only_mode_equals_plain_trainer(tmp_path, tok):
    rows = make_rows(12)
    common = dict(
        output_dir=str(tmp_path / "plain"),
        use_cpu=True,
        report_to=[],
        seed=0,
        disable_tqdm=True,
        save_strategy="no",
        logging_steps=1,
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
    )
    collate = RepTuneCollator(tok, "-2")

    def plain_collate(batch):
        out = collate(batch)
        out.pop("rep_mask")
        return out

    plain_model = tiny_model()
    plain = Trainer(
        plain_model,
        TrainingArguments(**common, remove_unused_columns=False),
        train_dataset=rows,
        data_collator=plain_collate,
    )
    plain.train()
    rep_model = tiny_model()
    common["output_dir"] = str(tmp_path / "rep")
    rep = RepTuneTrainer(
        rep_model,
        RepTuneConfig(
            **common, rep_weight=0.0, lm_weight=1.0, rep_positions="-2", rep_layers=[1, 2]
        ),
        vectors=random_vectors(32, [1, 2]),
        train_dataset=rows,
        processing_class=tok,
    )
    rep.train()
    assert _losses(rep) == _losses(plain)
    for (n, a), (_, b) in zip(plain_model.named_parameters(), rep_model.named_parameters()):
        assert torch.equal(a, b), n
    # the cosine is still measured (detached) in token-only mode
    assert "cos_layer_1" in rep.state.log_history[0]


def test_gradient_accumulation_matches_one_big_batch(tmp_path, tok):
    """GA 4 x batch 1 == GA 1 x batch 4 for the token, cosine and retain terms together."""
    rows = make_rows(4)  # different lengths: the micro-batches have different token counts
    grads, logs = [], []
    for bs, ga in ((4, 1), (1, 4)):
        model = tiny_model(init_lora_weights=False)  # random B: the retain term is non-zero
        args = make_args(
            tmp_path / f"ga{ga}",
            per_device_train_batch_size=bs,
            gradient_accumulation_steps=ga,
            max_steps=1,
            learning_rate=0.0,
            rep_layers=[1, 2],
            rep_positions="completion",
            lm_weight=0.3,
            retain_weight=0.5,
            retain_layers=[2, 3],
        )
        trainer = sequential(
            RepTuneTrainer(
                model,
                args,
                vectors=random_vectors(32, range(4)),
                train_dataset=rows,
                processing_class=tok,
            )
        )
        capture = GradCapture()
        trainer.add_callback(capture)
        trainer.train()
        grads.append(capture.grads[0])
        logs.append(trainer.state.log_history[0])
    big, small = grads
    assert big.keys() == small.keys() and len(big) > 0
    worst = max((big[k] - small[k]).abs().max().item() for k in big)
    assert worst <= 1e-5
    assert max(g.abs().max().item() for g in big.values()) > 1e-3  # not trivially zero
    for key in ("loss", "lm_loss", "rep_loss", "retain_loss", "cos_layer_1"):
        assert logs[0][key] == pytest.approx(logs[1][key], rel=1e-5)
    assert logs[0]["retain_loss"] > 0


# -- does it learn ---------------------------------------------------------------------------
LAYERS = [1, 2]


def _measure(model, tok, rows, vectors, positions):
    """Mean cosine, mean |cosine| at the target layers and positions, and the LM loss."""
    model.eval()
    batch = RepTuneCollator(tok, positions)(rows)
    mask = batch.pop("rep_mask")
    rec, fns = recording(LAYERS)
    with torch.no_grad(), intervene(model, fns, mask):
        loss = model(**batch).loss.item()
    cos = torch.cat([cosine_to_vector(rec.hidden(i)[rec.mask(i)], vectors[i]) for i in LAYERS])
    return cos.mean().item(), cos.abs().mean().item(), loss


@pytest.mark.parametrize("target", ["toward", "away", "orthogonal"])
def test_targets_reach_their_goal(tmp_path, tok, target):
    train, held_out = make_rows(48), make_rows(16, offset=100)
    model, positions = tiny_model(hidden=64), "-3"
    # Directions built from the untuned activations: perpendicular to their mean (cos ~ 0) for
    # toward/away, close to it (cos ~ 0.95) for orthogonal, so every target has work to do.
    batch = RepTuneCollator(tok, positions)(train)
    mask = batch.pop("rep_mask")
    rec, fns = recording(LAYERS)
    with torch.no_grad(), intervene(model, fns, mask):
        model(**batch)
    gen, vectors = torch.Generator().manual_seed(0), {}
    for i in LAYERS:
        mean = rec.hidden(i)[rec.mask(i)].mean(0)
        mean, noise = mean / mean.norm(), torch.randn(64, generator=gen)
        vectors[i] = (
            mean + 0.3 * noise / noise.norm()
            if target == "orthogonal"
            else (noise - (noise @ mean) * mean)
        )
    vectors = SteeringVectors(vectors)
    cos0, abs0, lm0 = _measure(model, tok, held_out, vectors, positions)
    if target == "orthogonal":
        assert abs0 > 0.8
    else:
        assert abs(cos0) < 0.1

    # published weights: 0.01 * CE + 1 * cosine
    args = make_args(
        tmp_path,
        rep_target=target,
        rep_layers=LAYERS,
        rep_positions=positions,
        lm_weight=0.01,
        max_steps=50,
        learning_rate=1e-2,
        per_device_train_batch_size=8,
        logging_steps=25,
    )
    trainer = RepTuneTrainer(
        model,
        args,
        vectors=vectors,
        train_dataset=train,
        eval_dataset=held_out,
        processing_class=tok,
    )
    trainer.train()
    cos1, abs1, lm1 = _measure(model, tok, held_out, vectors, positions)
    goal = {"toward": cos1 >= 0.9, "away": cos1 <= -0.9, "orthogonal": abs1 <= 0.1}[target]
    assert goal, (target, cos0, cos1, abs1)
    assert lm1 <= 1.05 * lm0
    # train and eval metrics reach the logs (TensorBoard/W&B read them from there)
    train_log = trainer.state.log_history[0]
    assert {"lm_loss", "rep_loss", "cos_layer_1", "cos_layer_2"} <= set(train_log)
    metrics = trainer.evaluate()
    cos_eval = (metrics["eval_cos_layer_1"] + metrics["eval_cos_layer_2"]) / 2
    assert cos_eval == pytest.approx(cos1, abs=1e-4)
    assert metrics["eval_lm_loss"] == pytest.approx(lm1, rel=1e-4)
    assert "eval_rep_loss" in metrics


# -- checkpoints ------------------------------------------------------------------------------
def test_resume_equals_uninterrupted_run_and_checkpoints_carry_reptune(tmp_path, tok):
    rows, vectors = make_rows(24), random_vectors(32, range(4))
    kw = dict(
        max_steps=4,
        save_strategy="steps",
        save_steps=2,
        rep_layers=[1, 2],
        retain_weight=0.2,
        learning_rate=5e-3,
    )
    full_model = tiny_model()
    full = RepTuneTrainer(
        full_model,
        make_args(tmp_path / "full", **kw),
        vectors=vectors,
        train_dataset=rows,
        processing_class=tok,
    )
    full.train()

    ckpt = tmp_path / "full" / "checkpoint-2"
    saved = json.loads((ckpt / REPTUNE_CONFIG_NAME).read_text())
    assert saved["rep_target"] == "toward" and saved["resolved_rep_layers"] == [1, 2]
    assert saved["resolved_retain_layers"] == [1, 2]
    loaded = SteeringVectors.load(ckpt / REPTUNE_VECTORS_DIR, model=full_model)
    assert all(torch.equal(loaded[i], vectors[i]) for i in range(4))
    assert (ckpt / "adapter_model.safetensors").is_file()

    resumed_model = tiny_model()
    resumed = RepTuneTrainer(
        resumed_model,
        make_args(tmp_path / "resumed", **kw),
        vectors=vectors,
        train_dataset=rows,
        processing_class=tok,
    )
    resumed.train(resume_from_checkpoint=str(ckpt))
    # the resumed history starts with the checkpoint's two logged steps
    assert len(_losses(resumed)) == 4
    assert _losses(resumed)[2:] == pytest.approx(_losses(full)[2:], rel=1e-6)
    for (n, a), (_, b) in zip(full_model.named_parameters(), resumed_model.named_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=n)

    other = RepTuneTrainer(
        tiny_model(),
        make_args(tmp_path / "other", **kw),
        vectors=random_vectors(32, range(4), seed=5),
        train_dataset=rows,
        processing_class=tok,
    )
    with pytest.raises(ValueError, match="other steering vectors"):
        other.train(resume_from_checkpoint=str(ckpt))


# -- integration points ----------------------------------------------------------------------
def test_sft_trainer_mixin_trains(tmp_path):
    from datasets import Dataset

    from reptune.training.sft import RepTuneSFTConfig, RepTuneSFTTrainer

    tok = make_tokenizer(pad=True)
    rows = Dataset.from_list([{**r, "completion": " " + r["completion"]} for r in make_rows(16)])
    args = RepTuneSFTConfig(
        output_dir=str(tmp_path),
        rep_layers=[1, 2],
        rep_positions="-1",
        lm_weight=0.01,
        per_device_train_batch_size=8,
        max_steps=12,
        learning_rate=1e-2,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        disable_tqdm=True,
        gradient_checkpointing=False,
    )
    trainer = RepTuneSFTTrainer(
        model=tiny_model(),
        args=args,
        train_dataset=rows,
        vectors=random_vectors(32, [1, 2]),
        processing_class=tok,
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert {"entropy", "mean_token_accuracy", "rep_loss", "cos_layer_1"} <= set(logs[0])
    assert logs[-1]["rep_loss"] < 0.5 * logs[0]["rep_loss"]
    assert logs[-1]["cos_layer_1"] > logs[0]["cos_layer_1"] + 0.3

    # a plain SFTConfig takes the reptune settings from rep_config=
    from trl import SFTConfig

    sft_args = SFTConfig(
        output_dir=str(tmp_path),
        report_to=[],
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
    )
    rep_args = RepTuneConfig(output_dir=str(tmp_path), rep_layers=[2], rep_positions="-1")
    vectors = random_vectors(32, [2])
    trainer = RepTuneSFTTrainer(
        model=tiny_model(),
        args=sft_args,
        rep_config=rep_args,
        vectors=vectors,
        train_dataset=rows,
        processing_class=tok,
    )
    assert trainer.rep_config is rep_args and trainer.rep_layers == [2]
    with pytest.raises(TypeError, match="lacks the reptune fields"):
        RepTuneSFTTrainer(
            model=tiny_model(),
            args=sft_args,
            vectors=vectors,
            train_dataset=rows,
            processing_class=tok,
        )


def test_text_columns_survive_remove_unused_columns(tmp_path, tok):
    from datasets import Dataset

    rows = Dataset.from_list([{**r, "id": i, "source": "x"} for i, r in enumerate(make_rows(8))])
    args = make_args(tmp_path, rep_layers=[1], max_steps=1)
    assert args.remove_unused_columns
    trainer = RepTuneTrainer(
        tiny_model(),
        args,
        vectors=random_vectors(32, [1]),
        train_dataset=rows,
        processing_class=tok,
    )
    trainer.train()
    assert trainer.state.global_step == 1


def test_gradient_routing_sends_each_loss_to_its_parameters(tmp_path, tok):
    """Full fine-tuning of one layer; cosine -> v/o projections only, token loss -> MLP only."""
    rows = make_rows(4)
    vectors = random_vectors(32, [1])
    batch = RepTuneCollator(tok, "-2")(rows)

    def grads(**kw):
        model = tiny_model(lora=False).train()
        args = make_args(tmp_path, rep_layers=[1], train_layers=[1], **kw)
        trainer = RepTuneTrainer(
            model, args, vectors=vectors, train_dataset=rows, processing_class=tok
        )
        trainer.compute_loss(model, dict(batch)).backward()
        return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    rep_only = grads(lm_weight=0.0)
    lm_only = grads(rep_weight=0.0)
    routed = grads(rep_params=r"self_attn\.(v|o)_proj", lm_params=r"\.mlp\.")
    assert set(routed) == set(rep_only) and all(".layers.1." in n for n in routed)
    for name, g in routed.items():
        if ".mlp." in name:
            expected = lm_only[name]
        elif "v_proj" in name or "o_proj" in name:
            expected = rep_only[name]
        else:
            expected = torch.zeros_like(g)
        torch.testing.assert_close(g, expected, rtol=1e-5, atol=1e-7, msg=name)
    # without routing both losses reach the attention projections (the published code's bug)
    assert rep_only["model.layers.1.self_attn.q_proj.weight"].abs().sum() > 0

    # and it runs inside the training loop
    model = tiny_model(lora=False)
    args = make_args(
        tmp_path,
        rep_layers=[1],
        train_layers=[1],
        max_steps=2,
        rep_params="v_proj",
        lm_params="mlp",
    )
    RepTuneTrainer(model, args, vectors=vectors, train_dataset=rows, processing_class=tok).train()


def test_selected_layer_full_finetuning_with_group_learning_rates(tmp_path, tok):
    model = tiny_model(lora=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = make_args(
        tmp_path,
        rep_layers=[2],
        train_layers=[1, 2],
        learning_rate=1e-4,
        param_lrs=[r"self_attn\.(v|o)_proj=1e-2"],
        max_steps=2,
        warmup_steps=0,
        lr_scheduler_type="constant",
        weight_decay=0.1,
    )
    trainer = RepTuneTrainer(
        model,
        args,
        vectors=random_vectors(32, [2]),
        train_dataset=make_rows(8),
        processing_class=tok,
    )
    trainer.train()
    lr_of = {id(p): g["lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
    for name, param in model.named_parameters():
        in_layers = ".layers.1." in name or ".layers.2." in name
        assert param.requires_grad == in_layers, name
        if not in_layers:
            assert id(param) not in lr_of and torch.equal(param, before[name]), name
            continue
        wanted = 1e-2 if ("v_proj" in name or "o_proj" in name) else 1e-4
        assert lr_of[id(param)] == pytest.approx(wanted), name


def test_tune_command_end_to_end(tmp_path, tok):
    from reptune.commands import tune

    model_dir = tmp_path / "model"
    model = tiny_model(lora=False)
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    random_vectors(32, [1, 2]).save(tmp_path / "vectors")
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in make_rows(8)) + "\n")
    out = tmp_path / "out"
    code = tune.main(
        [
            "--model",
            str(model_dir),
            "--vectors",
            str(tmp_path / "vectors"),
            "--data",
            str(data),
            "--eval_data",
            str(data),
            "--output_dir",
            str(out),
            "--rep_layers",
            "1",
            "2",
            "--rep_positions",
            "-2",
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "4",
            "--report_to",
            "none",
            "--use_cpu",
            "--save_strategy",
            "no",
            "--lora_r",
            "4",
            "--disable_tqdm",
            "true",
        ]
    )
    assert code == 0
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        REPTUNE_CONFIG_NAME,
        f"{REPTUNE_VECTORS_DIR}/steering_vectors.safetensors",
        "eval_results.json",
    ):
        assert (out / name).is_file(), name
    settings = json.loads((out / REPTUNE_CONFIG_NAME).read_text())
    assert settings["rep_layers"] == [1, 2] and settings["base_model"] == str(model_dir)
    # The card and the push read the output folder of `reptune tune` as they read a run folder.
    from huggingface_hub import ModelCard

    from reptune.cli import main as cli

    assert cli(["card", str(out)]) == 0
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "peft" and "PeftModel.from_pretrained" in card.text
    assert cli(["push", str(out), "--repo_id", "someone/tuned", "--dry_run"]) == 0
    from reptune.publish import files_to_upload

    files = files_to_upload(out)
    assert {"README.md", "adapter_model.safetensors", "adapter_config.json"} <= set(files)
    assert f"{REPTUNE_VECTORS_DIR}/steering_vectors.json" in files
    assert not any(f.endswith(".bin") or f.startswith("checkpoint-") for f in files)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    with pytest.raises(ValueError, match="line 1"):
        tune.main(["--model", str(model_dir), "--data", str(bad), "--output_dir", str(out)])
