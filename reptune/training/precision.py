"""One place decides mixed precision: the training config (``bf16: true`` / ``fp16: true``).

The shipped accelerate files say ``mixed_precision: "no"`` and leave precision to the recipe
config, since it belongs to the model (the published Llama-2-13B run is fp16, Llama-3 is bf16, the
CPU main job is float32). :func:`check_precision` reads what ``accelerate launch`` exported and
the training arguments, and fails early, with one line naming both files and the fix, when they
disagree. Without it the failure comes after the model is loaded, from DeepSpeed
(``ds bf16.enabled=True vs hf bf16|bf16_full_eval=False``) or from the first fp16 step.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

__all__ = ["check_precision", "launch_precision", "config_precision"]

_DEFAULT_ACCELERATE_FILE = "the accelerate config (`accelerate launch --config_file`)"


def config_precision(args) -> str:
    """``"bf16"``, ``"fp16"`` or ``"no"`` (``"both"`` when both are set): what the training
    arguments ask for."""
    if getattr(args, "bf16", False) and getattr(args, "fp16", False):
        return "both"
    if getattr(args, "bf16", False):
        return "bf16"
    return "fp16" if getattr(args, "fp16", False) else "no"


def launch_precision(environ=None) -> str:
    """The ``mixed_precision`` that ``accelerate launch`` exported (``"no"`` outside it)."""
    environ = os.environ if environ is None else environ
    return environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()


def _accelerate_file() -> str:
    """The ``--config_file`` of the ``accelerate launch`` above this process, when visible.

    accelerate exports no variable naming the file; its command line is a parent's (Linux).
    """
    pid = os.getpid()
    for _ in range(4):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            pid = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("PPid:")))
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, StopIteration, ValueError):
            break
        if "--config_file" in argv[:-1]:
            name = argv[argv.index("--config_file") + 1]
            if "--mixed_precision" in argv[:-1]:
                flag = argv[argv.index("--mixed_precision") + 1]
                return f"`accelerate launch --mixed_precision {flag}` (with {name})"
            return name
    return _DEFAULT_ACCELERATE_FILE


def _config_file(config) -> str:
    """The recipe config's path: given, or taken from a command line holding ``--config``
    (``sys.argv`` when None)."""
    if config is None or isinstance(config, (list, tuple)):
        argv = list(sys.argv if config is None else config)
        config = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None
    return str(config) if config else "the training arguments (bf16 / fp16)"


def check_precision(args, config=None, model_dtype: str | None = None, full_weights=False) -> str:
    """Raise ``ValueError`` (one line: both files and the fix) when the launch and the training
    config disagree on mixed precision; return the precision the run uses.

    ``args``: the training arguments (``bf16`` / ``fp16``); ``config``: the recipe config file, or
    the command line holding ``--config FILE`` (default ``sys.argv``); ``model_dtype`` and
    ``full_weights`` (full fine-tuning, no adapters): to refuse fp16 mixed precision on float16
    weights outside DeepSpeed, which fails at the first step ("Attempting to unscale FP16
    gradients"). :class:`RepTuneConfig` runs the launch checks itself, before transformers reads
    the launch; recipes call it again right after parsing, with the model's dtype.

    Example:
        >>> margs, hargs, targs = parse((ModelArguments, HonestyArguments, RepTuneConfig), argv)
        >>> check_precision(targs, argv, margs.dtype, full_weights=margs.finetune != "lora")
        'bf16'
    """
    wanted = config_precision(args)
    recipe = _config_file(config)
    if wanted == "both":
        raise ValueError(f"{recipe} sets both bf16 and fp16: keep one")
    launched = launch_precision()
    if launched not in ("no", wanted):
        launcher = _accelerate_file()
        if launcher.startswith("`"):  # set by the flag, not by the file
            drop = "drop --mixed_precision"
        else:
            drop = 'set mixed_precision: "no" in the accelerate file'
        raise ValueError(
            f"{launcher} sets mixed_precision: {launched} but {recipe} asks for {_say(wanted)}: "
            f"{drop} (the recipe config decides) or set {launched}: true in {recipe}"
        )
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    ds_file = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if deepspeed and ds_file and ds_file != "none" and Path(ds_file).is_file():
        ds_config = json.loads(Path(ds_file).read_text())
        for kind in ("bf16", "fp16"):
            enabled = str(ds_config.get(kind, {}).get("enabled", "auto")).lower()
            if enabled in ("true", "false") and (enabled == "true") != (wanted == kind):
                raise ValueError(
                    f"{ds_file} sets {kind}.enabled: {enabled} but {recipe} asks for "
                    f'{_say(wanted)}: set {kind}.enabled to "auto" in the DeepSpeed file (the '
                    "recipe config decides)"
                )
    if wanted == "fp16" and full_weights and model_dtype == "float16" and not deepspeed:
        raise ValueError(
            f"{recipe} trains float16 weights with fp16: true, which fails at the first step "
            f"under {_accelerate_file()} (no DeepSpeed): launch with "
            "recipes/accelerate/deepspeed_zero2.yaml or deepspeed_zero3.yaml, or set dtype: "
            f"float32 in {recipe}"
        )
    return wanted


def _say(precision: str) -> str:
    return "float32 (no bf16/fp16)" if precision == "no" else f"{precision}: true"
