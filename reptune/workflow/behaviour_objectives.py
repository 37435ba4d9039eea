"""The behaviour section's further objectives: the prompt tuned into the weights, and learned
steering vectors compared with the mean-difference vector.

- ``rep-prompt``: a LoRA variant tuned with ``rep_target="prompt"`` toward the frozen model's
  activations with the dev-chosen prompting wording in context, on rows the prompted model
  wrote (:func:`write_prompted_rows`); it answers with no prompt and no hooks.
  ``rep-prompt+steer`` adds the chosen coefficient times the vector to that target.
- ``learned-lm`` / ``learned-pref``: one direction at the steered layer learned with the model
  frozen (:func:`~reptune.training.learned_vectors.learn_vectors`), from the mean-difference
  vector, on the steered model's rows (the token loss) or on pairs of (steered answer, base
  answer) to the same prompt (the preference loss). Each steers at the dev coefficient with the
  best harmonic mean, as the mean-difference vector does; and, for the comparison at matched
  fluency, at the dev coefficient whose fluency is closest to the mean-difference vector's at its
  chosen coefficient, paired on test prompts against the mean-difference steered answers.

Example:
    >>> write_prompted_rows(run); choices = learned_step(run)
    >>> compare_at_matched_fluency(run, dict(run.learned), choices, steered_answers)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..evaluation.ab.scoring import generate_texts
from ..evaluation.open_ended.quality import KLReference
from ..evaluation.paired import paired_comparison
from ..evaluation.stats import mean_interval
from ..io import read_jsonl, write_jsonl
from ..pairs import format_chat
from ..steering import SteeredModel
from ..training.learned_vectors import learn_vectors
from ..vectors import SteeringVectors
from .measure import generate_condition
from .select import choose_best
from .variants import prompted_rows

__all__ = [
    "LEARNED",
    "PROMPT_VARIANTS",
    "choose_learned_coefficients",
    "compare_at_matched_fluency",
    "learn_behaviour_vectors",
    "learned_step",
    "objective_overrides",
    "prompt_fidelity",
    "prompt_target_settings",
    "variant_rows",
    "write_prompted_rows",
]

#: The tuned variants trained toward the prompted model (and the training settings they change).
PROMPT_VARIANTS: dict[str, dict] = {
    "rep-prompt": {"rep_target": "prompt", "lm_weight": 0.0},
    "rep-prompt+steer": {"rep_target": "prompt", "lm_weight": 0.0},
}
#: Learned-vector conditions and the objective of each.
LEARNED = {"learned-lm": "lm", "learned-pref": "preference"}
_AXES = ("behaviour", "fluency", "relevance", "harmonic")


def prompt_target_settings(wording) -> dict:
    """The ``rep_target="prompt"`` settings that put a prompting wording in the target's
    context: its system prompt (mode ``"system"``) or its user-turn template (mode
    ``"template"``), and its few-shot example exchanges.

    Example:
        >>> prompt_target_settings(SystemWording("configured", "Be warm."))["target_instruction"]
        'Be warm.'
    """
    system = getattr(wording, "system", None)
    template = getattr(wording, "user_template", "{prompt}")
    examples = [list(e) for e in getattr(wording, "examples", ())] or None
    if template == "{prompt}" and system:
        instruction, mode = system, "system"
    elif system is None and template != "{prompt}":
        instruction, mode = template, "template"
    else:
        raise ValueError(
            f"the prompting wording {getattr(wording, 'name', wording)!r} has "
            f"{'both a system prompt and a user template' if system else 'no instruction'}: the "
            "prompt target takes one of them; choose the wording among others (instructions)"
        )
    return {
        "target_instruction": instruction,
        "target_instruction_mode": mode,
        "target_examples": examples,
    }


def write_prompted_rows(run) -> list[dict]:
    """Rows ``{"prompt", "completion"}`` the prompted model (the base model with the dev-chosen
    prompting wording, :func:`prompt_target_settings`) wrote to the training prompts; a
    resumable stage cached in ``<section>/data/prompted_rows.jsonl``. Sets
    ``run.prompted_rows``.

    Example:
        >>> rows = write_prompted_rows(run)
    """
    rows_file = run.layout.data_file("prompted_rows.jsonl")
    bargs = run.bargs
    target = prompt_target_settings(run.wording)

    def rows():
        prompts = run.spec.train_prompts()[: bargs.train_prompts]
        written = prompted_rows(
            run.base, run.tok, prompts, target["target_instruction"],
            target["target_instruction_mode"], max_new_tokens=bargs.row_tokens,
            examples=target["target_examples"] or (),
        )  # fmt: skip
        write_jsonl(rows_file, written)
        return {"rows": len(written), "prompts": len(prompts)}

    settings = run.settings | {"wording": run.wording.name, **target}
    run.stages.run(f"{run.name}_prompted_rows", rows, settings)
    run.prompted_rows = read_jsonl(rows_file)
    return run.prompted_rows


def prompt_fidelity(run):
    """``score(model) -> float``: minus the mean next-token ``KL(prompted base || model)``
    along the prompted model's greedy answers to the dev prompts, the model reading the plain
    prompts (0 = the model without the prompt predicts as the prompted base does). The
    prompted side runs once, at the first call.

    Example:
        >>> score = prompt_fidelity(run); score(tuned)  # e.g. -0.08
    """
    if run.fidelity is None:
        instructed = [run.wording.format(run.tok, p) for p in run.dev]  # as prompting reads it
        answers = generate_texts(run.base, run.tok, instructed, max_new_tokens=run.bargs.new_tokens)
        reference = KLReference(run.base, run.tok, instructed, answers)
        plain = [format_chat(run.tok, p) for p in run.dev]

        def score(model) -> float:
            kl = reference.kl(model, prompts=plain)
            return -sum(kl) / len(kl)

        run.fidelity = score
    return run.fidelity


def variant_rows(run, variant: str) -> list[dict]:
    """The training rows of ``variant``: the prompted rows for the prompt variants, the steered
    rows otherwise.

    Example:
        >>> variant_rows(run, "rep-prompt")[0]["completion"]
    """
    if variant in PROMPT_VARIANTS:
        if not getattr(run, "prompted_rows", None):
            raise ValueError(
                f"{variant} trains on the prompted rows: run write_prompted_rows first"
            )
        return run.prompted_rows
    return run.train_rows


def objective_overrides(run, variant: str) -> dict:
    """The training settings a prompt variant changes (empty for the others): the dev-chosen
    prompting wording in the target pass's context, and for ``rep-prompt+steer`` the chosen
    coefficient added to it.

    Example:
        >>> objective_overrides(run, "rep-prompt")["target_instruction"]
    """
    if variant not in PROMPT_VARIANTS:
        return {}
    overrides = dict(PROMPT_VARIANTS[variant]) | prompt_target_settings(run.wording)
    if variant == "rep-prompt+steer":
        overrides.update(steer_coefficient=run.coefficient, coefficient_unit="residual_norm")
    return overrides


def _base_answers(run, prompts: Sequence[str]) -> list[str]:
    chat = [format_chat(run.tok, p) for p in prompts]
    return generate_texts(run.base, run.tok, chat, max_new_tokens=run.bargs.row_tokens)


def learn_behaviour_vectors(run) -> dict[str, SteeringVectors]:
    """Learned vectors at the steered layer, one per objective in ``learned_objectives``, from
    the mean-difference vector; saved under ``<section>/models/<name>/`` (a resumable stage).
    The preference rows pair each steered row's answer (chosen) with the base model's greedy
    answer to the same prompt (rejected).

    Example:
        >>> learn_behaviour_vectors(run)["learned-pref"].metadata["objective"]
    """
    bargs = run.bargs
    names = [n for n, obj in LEARNED.items() if obj in bargs.learned_objectives]
    low, high = min(bargs.coefficients), max(bargs.coefficients)

    def learn():
        info = {}
        rows = {"lm": run.train_rows}
        if "preference" in bargs.learned_objectives:
            rejected = _base_answers(run, [r["prompt"] for r in run.train_rows])
            rows["preference"] = [
                {"prompt": r["prompt"], "chosen": r["completion"], "rejected": b.strip()}
                for r, b in zip(run.train_rows, rejected)
                if b.strip() and b.strip() != r["completion"]
            ]
        for name in names:
            objective = LEARNED[name]
            vecs = learn_vectors(
                run.base, run.tok, rows[objective], [run.layer], objective,
                steps=bargs.learned_steps, learning_rate=bargs.learned_learning_rate,
                batch_size=bargs.tune_batch_size, coefficients=(low, high), init=run.vecs,
                seed=run.targs.seed,
            )  # fmt: skip
            vecs.save(run.layout.model_dir(name))
            mean_diff = run.vecs[run.layer].float()
            cosine = torch.nn.functional.cosine_similarity(vecs[run.layer].float(), mean_diff, 0)
            info[name] = {
                "rows": len(rows[objective]),
                "first_loss": vecs.metadata["first_loss"],
                "last_loss": vecs.metadata["last_loss"],
                "cosine_to_mean_diff": float(cosine),
            }
        return info

    run.stages.run(f"{run.name}_learned", learn, run.settings | {"learned": names})
    return {n: SteeringVectors.load(run.layout.model_dir(n), model=run.base) for n in names}


def _sweep(run, vecs: SteeringVectors, prompts: Sequence[str], coefficients) -> list[dict]:
    """Quality axes of ``vecs`` steered at each coefficient on ``prompts`` (one shared batch)."""
    chat = [format_chat(run.tok, p) for p in prompts]
    steered = SteeredModel(run.base, vecs, layers=[run.layer])
    texts = generate_texts(
        steered, run.tok, chat * len(coefficients),
        coefficients=torch.tensor([float(c) for c in coefficients for _ in prompts]),
        max_new_tokens=run.bargs.new_tokens, batch_size=32,
    )  # fmt: skip
    q, n = run.scorers.score(list(prompts) * len(coefficients), texts), len(prompts)
    rows = []
    for i, c in enumerate(coefficients):
        row = {"coefficient": float(c)}
        for axis in _AXES:
            row[axis] = mean_interval(q[axis][i * n : (i + 1) * n]).value
        rows.append(row)
    return rows


def choose_learned_coefficients(run, learned: Mapping[str, SteeringVectors]) -> dict:
    """For each learned vector, on dev prompts only: the coefficient with the best harmonic
    mean (ties: the smaller), and the one whose fluency is closest to the mean-difference
    vector's at its chosen coefficient (the matched-fluency point). A resumable stage.

    Example:
        >>> choose_learned_coefficients(run, learned)["learned-lm"]["matched"]
    """

    def choose():
        # the mean-difference vector at its chosen coefficient, scored as the sweeps are
        target = _sweep(run, run.vecs, run.dev, [run.coefficient])[0]
        out = {"mean_diff_fluency": target["fluency"]}
        for name, vecs in learned.items():
            rows = _sweep(run, vecs, run.dev, run.bargs.coefficients)
            best = choose_best(rows, lambda r: r["harmonic"], lambda r: abs(r["coefficient"]))
            matched = min(rows, key=lambda r: (abs(r["fluency"] - target["fluency"]),
                                               abs(r["coefficient"])))  # fmt: skip
            out[name] = {"rows": rows, "coefficient": best["coefficient"],
                         "matched": matched["coefficient"]}  # fmt: skip
        return out

    return run.stages.run(
        f"{run.name}_learned_select", choose, run.settings | {"learned": list(learned)}
    )


def learned_step(run) -> dict:
    """Learn the vectors of ``learned_objectives`` and choose their coefficients on dev; sets
    ``run.learned`` (``name -> (vectors, coefficient)``, the conditions the section's
    evaluation adds) and returns the choices (empty when no objective is asked for).

    Example:
        >>> choices = learned_step(run); sorted(run.learned)
        ['learned-lm', 'learned-pref']
    """
    if not run.bargs.learned_objectives:
        run.learned = {}
        return {}
    learned = learn_behaviour_vectors(run)
    choices = choose_learned_coefficients(run, learned)
    run.learned = {n: (v, choices[n]["coefficient"]) for n, v in learned.items()}
    run.settings = run.settings | {"learned_choices": choices}
    return choices


def compare_at_matched_fluency(
    run, learned: Mapping[str, SteeringVectors], choices: Mapping, steered_answers=None
) -> dict:
    """Each learned vector at its matched-fluency coefficient against the mean-difference
    vector at its chosen one, on the test prompts: behaviour and fluency of both, and the
    paired difference (learned minus mean-difference) of each axis. ``steered_answers`` (the
    mean-difference steered test answers) are generated when not given. A resumable stage.

    Example:
        >>> compare_at_matched_fluency(run, learned, choices, answers)["learned-lm"]["behaviour"]
    """
    test = run.test

    def compare():
        answers = steered_answers or generate_condition(
            run.steered(), run.tok, test, coefficient=run.coefficient,
            new_tokens=run.bargs.new_tokens,
        )  # fmt: skip
        reference = run.scorers.score(test, answers)
        out = {"mean_diff": {a: mean_interval(reference[a]).value for a in _AXES}}
        for name, vecs in learned.items():
            c = choices[name]["matched"]
            texts = generate_condition(
                SteeredModel(run.base, vecs, layers=[run.layer]), run.tok, test,
                coefficient=c, new_tokens=run.bargs.new_tokens,
            )  # fmt: skip
            q = run.scorers.score(test, texts)
            out[name] = {"coefficient": c}
            for axis in ("behaviour", "fluency"):
                out[name][axis] = mean_interval(q[axis]).value
                out[name][f"{axis}_vs_mean_diff"] = paired_comparison(
                    q[axis], reference[axis]
                ).as_dict()
        return out

    settings = run.settings | {"matched": {n: choices[n]["matched"] for n in learned}}
    return run.stages.run(f"{run.name}_learned_matched", compare, settings)
