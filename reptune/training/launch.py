"""Checks and helpers for runs started by ``accelerate launch`` or ``torchrun``.

:func:`check_launch` refuses the launches that otherwise train without an error but not as
asked; :func:`whole_model_loading` loads a model whole under a ZeRO-3 launch, for the stages of a
pipeline that run it outside the Trainer (extraction, steering, evaluation).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

__all__ = ["check_launch", "use_all_cores", "whole_model_loading"]


def check_launch(args, fsdp_enabled: bool, environ=None) -> None:
    """Raise when the processes the launcher started and what the Trainer set up disagree.

    Both cases otherwise train without an error: each CPU process of a ``torchrun`` launch with
    ``TrainingArguments(deepspeed=...)`` takes itself for the only one (DeepSpeed then fails on
    its batch size, or the ranks train apart); an FSDP launch on CPU processes is not FSDP.

    Example:
        >>> check_launch(trainer.args, trainer.is_fsdp_enabled)
    """
    environ = os.environ if environ is None else environ
    launched = int(environ.get("WORLD_SIZE", "1"))
    if launched > 1 and args.world_size != launched:
        import torch

        if not getattr(args, "use_cpu", False) and not torch.cuda.is_available():
            fix = "CPU processes need use_cpu=True (--use_cpu true)"
        else:
            fix = "leave the process group to `accelerate launch` or torchrun"
        if getattr(args, "deepspeed", None):
            fix += (
                "; the supported DeepSpeed route is `accelerate launch --config_file "
                "recipes/accelerate/deepspeed_zero2.yaml` (see recipes/SCALING.md)"
            )
        raise ValueError(
            f"{launched} processes were launched but the training arguments see "
            f"{args.world_size}: {fix}"
        )
    if environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and not fsdp_enabled:
        raise ValueError(
            "the launch asks for FSDP but accelerate did not turn it on (it does only on GPUs; "
            "CPU processes fall back to DDP): launch CPU processes with "
            "recipes/accelerate/multi_gpu.yaml (DDP over gloo)"
        )


def use_all_cores(environ=None) -> int | None:
    """Give a lone CPU process started by ``accelerate launch`` every core it may use.

    ``accelerate launch`` with no config, on a machine without a GPU, exports
    ``OMP_NUM_THREADS=1`` to its single process, so the whole job runs on one core (about half
    the speed on two). When the launch is one process on CPU and the thread count is accelerate's
    default, this raises torch's intra-op thread count to the cores in the process's affinity
    mask and returns it; any other launch, or ``REPTUNE_NUM_THREADS`` set, is left as asked
    (``REPTUNE_NUM_THREADS=N`` sets N threads explicitly). Returns None when nothing changed.

    Example:
        >>> threads = use_all_cores()  # first thing in a recipe's main()
    """
    import torch

    environ = os.environ if environ is None else environ
    if environ.get("REPTUNE_NUM_THREADS"):
        threads = int(environ["REPTUNE_NUM_THREADS"])
    elif (
        "ACCELERATE_DYNAMO_BACKEND" in environ  # set by accelerate launch for its processes
        and environ.get("OMP_NUM_THREADS") == "1"
        and int(environ.get("WORLD_SIZE", "1")) == 1
        and not torch.cuda.is_available()
    ):
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        threads = threads or os.cpu_count() or 1
    else:
        return None
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
        logging.getLogger(__name__).info("running on %d CPU threads", threads)
    return threads


@contextmanager
def whole_model_loading():
    """Inside, ``from_pretrained`` loads the whole model even under a ZeRO-3 launch.

    Once the training arguments of a ZeRO-3 launch exist, transformers loads every model
    straight into DeepSpeed partitions; such a model runs only inside a DeepSpeed engine. Models
    used outside the Trainer must be loaded whole; the Trainer partitions its own model when
    training starts, so wrapping its load too only costs CPU memory while loading.

    Example:
        >>> with whole_model_loading():
        ...     model, tok = load_model("meta-llama/Llama-2-13b-chat-hf")
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    # transformers keeps the active DeepSpeed config behind a module-level weak reference.
    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved
