"""Load the models an evaluation compares: a base model, a PEFT adapter on it, or a tuned folder."""

from __future__ import annotations

from pathlib import Path

__all__ = ["is_adapter_folder", "check_model_folder", "load_for_evaluation", "parse_named_specs"]


def is_adapter_folder(path: str | Path) -> bool:
    """True for a folder written by ``PeftModel.save_pretrained`` (it has adapter_config.json).

    Example:
        >>> is_adapter_folder("runs/honesty/adapter")
    """
    return (Path(path) / "adapter_config.json").is_file()


def check_model_folder(path: str | Path, adapter: bool = False) -> None:
    """Raise unless ``path`` is a PEFT adapter folder or (``adapter=False``) a model folder.

    Checked before any model loads, so a typo in a path fails at once.

    Example:
        >>> check_model_folder("runs/honesty/adapter")
    """
    folder = Path(path)
    if is_adapter_folder(folder):
        return
    if adapter:
        raise FileNotFoundError(
            f"{path} is not a PEFT adapter folder (no adapter_config.json); pass a full tuned "
            "model folder as the model instead"
        )
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} is neither a PEFT adapter folder (adapter_config.json) nor a model folder "
            "(config.json)"
        )


def load_for_evaluation(
    model: str,
    adapter: str | None = None,
    dtype: str = "float32",
    trust_remote_code: bool = False,
):
    """``(model, tokenizer)`` for ``model`` (any :func:`reptune.models.load_model` spec), with
    the PEFT ``adapter`` folder loaded on top when given; in eval mode.

    Example:
        >>> tuned, tok = load_for_evaluation("embedded:smollm2-135m", "runs/honesty/adapter")
    """
    from ..models import load_model

    if adapter is not None and not is_adapter_folder(adapter):
        raise FileNotFoundError(
            f"{adapter} is not a PEFT adapter folder (no adapter_config.json); pass a full tuned "
            "model folder as the model instead"
        )
    base, tokenizer = load_model(model, dtype=dtype, trust_remote_code=trust_remote_code)
    if adapter is None:
        return base, tokenizer
    from peft import PeftModel

    return PeftModel.from_pretrained(base, adapter).eval(), tokenizer


def parse_named_specs(specs: list[str]) -> list[tuple[str, str]]:
    """``["token=runs/tok/adapter", "rep=runs/rep"]`` -> ``[("token", ...), ("rep", ...)]``.

    Example:
        >>> parse_named_specs(["rep-tuned=runs/rep/adapter"])
        [('rep-tuned', 'runs/rep/adapter')]
    """
    out = []
    for spec in specs:
        name, sep, target = spec.partition("=")
        if not sep or not name.strip() or not target.strip():
            raise ValueError(f"expected NAME=PATH, got {spec!r} (e.g. rep-tuned=runs/rep/adapter)")
        out.append((name.strip(), target.strip()))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")
    return out
