"""Tuned variants with equal chances: every variant (token-SFT included) gets the same LoRA
placements, the same learning-rate grid and a checkpoint choice, all decided on dev prompts by
the reported criterion (the dev harmonic mean of the independent scorers; for ``rep-prompt``
with ``prompt_criterion="fidelity"``, its closeness to the prompted model:
:func:`~reptune.workflow.behaviour_objectives.prompt_fidelity`); the chosen configuration is
then trained again with the other seeds.

Example:
    >>> trained = tune_variants(run)  # run: a BehaviourRun after its rows are written
    >>> trained["rep-steer"]["chosen"]
    {'placement': 'attention', 'learning_rate': 0.002, 'step': 10, 'dev_score': 0.41, ...}
"""

from __future__ import annotations

import dataclasses
import shutil

from ..io import atomic_folder
from .behaviour_objectives import (
    PROMPT_VARIANTS,
    objective_overrides,
    prompt_fidelity,
    variant_rows,
)
from .measure import generate_condition
from .variants import DevSelection, train_variant

__all__ = [
    "PLACEMENTS",
    "VARIANTS",
    "STEPS",
    "criterion",
    "variant_overrides",
    "tune_variants",
    "seed_dir",
]

#: The tuned variants and what each changes in the training settings (the one list of them).
VARIANTS: dict[str, dict] = {
    "token-sft": {"rep_weight": 0.0, "lm_weight": 1.0},
    "rep-cosine": {"rep_target": "toward"},
    "rep-steer": {"rep_target": "steer", "lm_weight": 0.0},
    **PROMPT_VARIANTS,  # trained toward the prompted model, on the prompted model's rows
}

#: The field of BehaviourArguments holding each variant's training steps.
STEPS = {"token-sft": "sft_steps", "rep-cosine": "cosine_steps", "rep-steer": "steer_steps"}
STEPS |= dict.fromkeys(PROMPT_VARIANTS, "prompt_steps")

#: LoRA placements every variant may be given (always on blocks up to the steered layer).
PLACEMENTS: dict[str, list[str]] = {
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "attention+mlp": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


def variant_overrides(run, variant: str, learning_rate: float) -> dict:
    """The training settings variant ``variant`` changes (at one learning rate)."""
    bargs = run.bargs
    overrides = dict(VARIANTS[variant]) | objective_overrides(run, variant)
    if variant == "rep-cosine":
        overrides["lm_weight"] = bargs.cosine_lm_weight
    if variant == "rep-steer":
        overrides.update(steer_coefficient=run.coefficient, coefficient_unit="residual_norm")
    overrides.update(
        rep_layers=[_rep_layer(run, variant)],
        rep_positions="all",
        learning_rate=float(learning_rate),
        max_steps=getattr(bargs, STEPS[variant], bargs.sft_steps),
        per_device_train_batch_size=bargs.tune_batch_size,
        num_train_epochs=1.0,
        save_strategy="no",
    )
    return overrides


def _rep_layer(run, variant: str) -> int:
    """The layer ``variant`` is tuned at: ``prompt_layer`` for the prompt variants when set,
    else the steered layer."""
    if variant in PROMPT_VARIANTS and run.bargs.prompt_layer is not None:
        return run.bargs.prompt_layer
    return run.layer


def _candidate_name(variant: str, placement: str, learning_rate: float) -> str:
    return f"{variant}--{placement}--lr{learning_rate:g}"


def seed_dir(run, variant: str, seed: int):
    """Where the chosen configuration of ``variant`` trained with ``seed`` is saved (the first
    seed's model is the dev-chosen one itself, at ``model_dir(variant)``)."""
    first = run.bargs.seeds[0]
    return run.layout.model_dir(variant if seed == first else f"{variant}--seed{seed}")


def criterion(run, variant: str) -> str:
    """The dev criterion of ``variant``'s choices: ``"fidelity"`` for ``rep-prompt`` when
    ``prompt_criterion`` says so (its aim is to answer as the prompted model does), else
    ``"harmonic"``.

    Example:
        >>> criterion(run, "token-sft")
        'harmonic'
    """
    if variant == "rep-prompt" and run.bargs.prompt_criterion == "fidelity":
        return "fidelity"
    return "harmonic"


def _dev_score(run, variant: str):
    """The criterion of every checkpoint: the dev harmonic mean of the model's greedy answers,
    or minus its dev KL to the prompted model (:func:`criterion`)."""
    if criterion(run, variant) == "fidelity":
        return prompt_fidelity(run)
    prompts = run.dev

    def score(model) -> float:
        answers = generate_condition(model, run.tok, prompts, new_tokens=run.bargs.new_tokens)
        return run.scorers.dev_harmonic(prompts, answers)

    return score


def _train_candidate(run, variant: str, placement: str, lr: float) -> dict:
    margs = dataclasses.replace(run.margs, lora_target_modules=PLACEMENTS[placement])
    overrides = variant_overrides(run, variant, lr)
    name = _candidate_name(variant, placement, lr)
    targs = dataclasses.replace(run.targs, seed=run.bargs.seeds[0])
    info = run.stages.run(
        f"{run.name}_tune_{name}",
        lambda: train_variant(
            margs,
            targs,
            run.vecs,
            variant_rows(run, variant),
            run.layout.model_dir(name),
            select=DevSelection(_dev_score(run, variant), run.bargs.select_every),
            **overrides,
        ),
        run.settings
        | {
            "train": targs.to_dict(),
            "variant": overrides,
            "placement": placement,
            "criterion": criterion(run, variant),
        },
        main_process_only=False,
    )
    scores = {int(k): float(v) for k, v in info["dev_scores"].items()}
    step = int(info["chosen_step"])
    return {
        "placement": placement,
        "learning_rate": float(lr),
        "step": step,
        "dev_score": scores[step],
        "dev_scores": scores,
        "train_loss": info.get("train_loss"),
        "name": name,
    }


def _choose(candidates: list[dict]) -> dict:
    """The best dev score; ties go to the earlier candidate (the first placement and the first
    learning rate of the grid: the cheaper, less changed model)."""
    return max(reversed(candidates), key=lambda c: c["dev_score"])


def _train_seed(run, variant: str, chosen: dict, seed: int) -> dict:
    margs = dataclasses.replace(run.margs, lora_target_modules=PLACEMENTS[chosen["placement"]])
    overrides = variant_overrides(run, variant, chosen["learning_rate"]) | {
        "max_steps": chosen["step"]
    }
    targs = dataclasses.replace(run.targs, seed=seed)
    return run.stages.run(
        f"{run.name}_tune_{variant}_seed{seed}",
        lambda: train_variant(
            margs,
            targs,
            run.vecs,
            variant_rows(run, variant),
            seed_dir(run, variant, seed),
            **overrides,
        ),
        run.settings | {"train": targs.to_dict(), "variant": overrides, "chosen": chosen},
        main_process_only=False,
    )


def tune_variants(run) -> dict[str, dict]:
    """Every variant of ``run.bargs.variants``: the grid of placements x learning rates, each
    checkpoint-chosen on dev; the best configuration kept as ``model_dir(variant)`` and trained
    again with every further seed. Returns per variant its candidates, the chosen one and the
    seeds' training results."""
    bargs = run.bargs
    for variant in bargs.variants:
        candidates = []
        for placement in bargs.lora_placements:
            for lr in bargs.learning_rates:
                candidates.append(_train_candidate(run, variant, placement, lr))
        chosen = _choose(candidates)
        target = run.layout.model_dir(variant)
        if run.stages.state.is_main_process:
            with atomic_folder(target) as tmp:
                shutil.copytree(run.layout.model_dir(chosen["name"]), tmp, dirs_exist_ok=True)
        run.stages.state.wait_for_everyone()
        seeds = {bargs.seeds[0]: {"steps": chosen["step"], "train_loss": chosen["train_loss"]}}
        for seed in bargs.seeds[1:]:
            seeds[seed] = _train_seed(run, variant, chosen, seed)
        run.trained[variant] = {
            "candidates": [{k: v for k, v in c.items() if k != "dev_scores"} for c in candidates],
            "checkpoints": {c["name"]: c["dev_scores"] for c in candidates},
            "chosen": {k: v for k, v in chosen.items() if k != "dev_scores"},
            "seeds": seeds,
            "dev_prompts": len(run.dev),
            "criterion": criterion(run, variant),
        }
        if criterion(run, variant) == "fidelity":
            # The scale of the chosen dev KL: the base model's without the prompt.
            run.trained[variant]["base_dev_score"] = prompt_fidelity(run)(run.base)
    return run.trained
