"""Let accelerate's FSDP2 run on CPU processes (gloo), so the tests exercise real FSDP2.

accelerate 1.15 turns FSDP on only for GPU-like distributed types: with CPU processes it keeps
``MULTI_CPU`` and, with ``use_cpu``, silently wraps the model in DDP instead. torch's own
``fully_shard`` works on a gloo CPU mesh, so the only thing missing is accelerate's choice.
:func:`keep_fsdp_on_cpu` makes that choice: after ``AcceleratorState`` is built for CPU
processes with an FSDP plugin, it switches the state to ``FSDP``, on ``PartialState`` too
(saving reads the distributed type there; a mismatch fails with "invalid python storage").

This lives with the tests, not in reptune: it patches accelerate's internals, and only CPU test
runs need it (on GPUs accelerate picks FSDP itself).

Example:
    >>> with keep_fsdp_on_cpu():
    ...     trainer = RepTuneTrainer(model, args, ...)  # args under `accelerate launch` (FSDP)
    ...     trainer.train()
"""

from __future__ import annotations

from contextlib import contextmanager

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

__all__ = ["keep_fsdp_on_cpu"]


@contextmanager
def keep_fsdp_on_cpu():
    original = AcceleratorState.__init__
    partial = PartialState()
    before = partial.distributed_type

    def init(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            if self._mixed_precision != "no":
                fsdp_plugin.set_mixed_precision(self._mixed_precision)
            self.fsdp_plugin = fsdp_plugin
            partial.distributed_type = DistributedType.FSDP

    AcceleratorState.__init__ = init
    try:
        yield
    finally:
        AcceleratorState.__init__ = original
        partial.distributed_type = before
