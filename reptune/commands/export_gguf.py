"""``reptune export-gguf VECTORS``: write steering vectors as a llama.cpp control vector.

``direction.N`` in the file is reptune's layer N (the output of block N, 0-based), which is where
llama.cpp adds it; layer 0 cannot be exported. It holds what reptune's coefficient 1 adds in
``--coefficient_unit`` (default ``residual_norm``), so llama.cpp's scale is reptune's
coefficient: ``llama-completion -m model.gguf --control-vector-scaled FILE:0.1`` steers like
``SteeredModel(..., coefficient=0.1)``.

Example:
    $ reptune export-gguf runs/honesty/vectors --output honesty.gguf --layers 12 13 14
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import coefficient_unit_field, parse
from .card import positional_as_option

__all__ = ["HELP", "ExportGGUFArguments", "main"]

HELP = "write steering vectors as a llama.cpp control vector (GGUF)"

DEFAULT_NAME = "control_vector.gguf"


@dataclass
class ExportGGUFArguments:
    """Options of ``reptune export-gguf``."""

    vectors_dir: str | None = field(
        default=None,
        metadata={
            "help": "Vectors folder or run folder. May also be given as the first "
            "argument: `reptune export-gguf VECTORS --output FILE.gguf`."
        },
    )
    output: str | None = field(
        default=None,
        metadata={"help": f"GGUF file to write; {DEFAULT_NAME} in the given folder when omitted."},
    )
    model_hint: str | None = field(
        default=None,
        metadata={"help": "llama.cpp architecture, e.g. llama; from the vectors when omitted."},
    )
    layers: list[int] | None = field(
        default=None,
        metadata={"help": "Layers to export; all when omitted. Layer 0 cannot be exported."},
    )
    coefficient_unit: str = coefficient_unit_field()


def main(argv: list[str]) -> int:
    from ..publish.gguf_export import export_control_vector, llama_cpp_hint
    from ..vectors import SteeringVectors
    from ..workflow.layout import find_vectors_dir

    (args,) = parse(
        (ExportGGUFArguments,),
        positional_as_option(argv, "--vectors_dir"),
        "reptune export-gguf VECTORS",
    )
    if not args.vectors_dir:
        raise ValueError("no vectors folder given: use `reptune export-gguf VECTORS`")
    output = Path(args.output) if args.output else Path(args.vectors_dir) / DEFAULT_NAME
    if output.is_dir():
        raise ValueError(f"--output {output} is a folder: name the .gguf file to write")
    vectors = SteeringVectors.load(find_vectors_dir(args.vectors_dir))
    path = export_control_vector(
        vectors,
        output,
        args.model_hint,
        layers=args.layers,
        coefficient_unit=args.coefficient_unit,
    )
    print(path)
    # The scale in llama.cpp is reptune's coefficient in this unit.
    print(f"steer with: {llama_cpp_hint(path, args.coefficient_unit)}")
    return 0
