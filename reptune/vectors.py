"""SteeringVectors: one direction per layer, with the metadata needed to use it safely."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .io import atomic_folder, read_folder_whole
from .layers import hidden_size, num_layers, unwrap_model
from .vector_files import (
    METADATA_FILE,
    VECTORS_FILE,
    locate_vectors,
    read_vector_files,
    tensors_digest,
)
from .version import __version__

__all__ = [
    "SteeringVectors",
    "VECTORS_FILE",
    "METADATA_FILE",
    "COEFFICIENT_UNITS",
    "DEFAULT_COEFFICIENT_UNIT",
    "check_coefficient_unit",
    "describe_unit",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1

#: What a steering coefficient is measured in. ``"residual_norm"``: a fraction of the layer's
#: median residual-stream norm (``0.1`` adds a vector one tenth as long as a typical activation),
#: comparable across layers and models; ``"raw"``: a multiple of the stored vector.
COEFFICIENT_UNITS = ("residual_norm", "raw")
#: The unit used everywhere a coefficient is taken (API, CLI, recipes, trainer, reports).
DEFAULT_COEFFICIENT_UNIT = "residual_norm"


def check_coefficient_unit(unit: str) -> str:
    """Return ``unit`` if it is one of :data:`COEFFICIENT_UNITS`, else raise.

    Example:
        >>> check_coefficient_unit("raw")
        'raw'
    """
    if unit not in COEFFICIENT_UNITS:
        raise ValueError(f"unknown coefficient_unit {unit!r}: use one of {COEFFICIENT_UNITS}")
    return unit


def describe_unit(unit: str) -> str:
    """The unit in words, for reports and plot axes.

    Example:
        >>> describe_unit("raw")
        'multiples of the stored vector'
    """
    check_coefficient_unit(unit)
    if unit == "raw":
        return "multiples of the stored vector"
    return "fraction of the layer's median residual norm"


#: Metadata fields compared with the model's own before vectors are used with it.
MODEL_FIELDS = ("model_type", "num_layers", "hidden_size")


@dataclass
class SteeringVectors:
    """One direction per layer (``layer index -> (hidden,) tensor``) plus metadata.

    Layer ``i`` is the output of decoder block ``i``. ``metadata`` holds at least ``model_name``,
    ``hidden_size``, ``num_layers``, ``method``, ``position``, ``data_fingerprint`` and
    ``reptune_version``; extraction adds per-layer ``diagnostics``.

    Example:
        >>> vecs = SteeringVectors({14: torch.randn(4096)}, {"hidden_size": 4096, "num_layers": 32})
        >>> vecs.save("runs/honesty/vectors")
        >>> vecs = SteeringVectors.load("runs/honesty/vectors", model=model)
    """

    vectors: dict[int, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not self.vectors:
            raise ValueError("SteeringVectors needs at least one layer")
        if not isinstance(self.vectors, dict):
            raise TypeError(
                f"vectors must be a {{layer: tensor}} dict, got {type(self.vectors).__name__}"
            )
        if not isinstance(self.metadata, dict):
            raise TypeError(f"metadata must be a dict, got {type(self.metadata).__name__}")
        sizes = set()
        for layer, vec in self.vectors.items():
            if not isinstance(layer, int) or isinstance(layer, bool) or layer < 0:
                raise ValueError(f"layer keys must be non-negative ints, got {layer!r}")
            if not isinstance(vec, torch.Tensor):
                raise TypeError(
                    f"vector for layer {layer} is a {type(vec).__name__}, not a torch.Tensor"
                )
            if not vec.is_floating_point():
                raise TypeError(
                    f"vector for layer {layer} has dtype {vec.dtype}; want a floating-point "
                    "tensor (use .float())"
                )
            if vec.dim() != 1:
                raise ValueError(f"vector for layer {layer} has shape {tuple(vec.shape)}; want 1-D")
            if not torch.isfinite(vec.float()).all():  # float8 has no isfinite of its own
                raise ValueError(
                    f"vector for layer {layer} contains NaN or inf; re-extract it (check the "
                    "pairs differ and the model runs in a stable dtype)"
                )
            sizes.add(vec.shape[0])
        if len(sizes) != 1:
            raise ValueError(f"vectors have different sizes {sorted(sizes)}")
        width = sizes.pop()
        declared = self.metadata.get("hidden_size")
        if declared is not None and int(declared) != width:
            raise ValueError(f"metadata says hidden_size={declared} but the vectors have {width}")
        self.metadata.setdefault("hidden_size", width)

    @property
    def layers(self) -> list[int]:
        return sorted(self.vectors)

    @property
    def hidden_size(self) -> int:
        return int(self.metadata["hidden_size"])

    def __getitem__(self, layer: int) -> torch.Tensor:
        return self.vectors[layer]

    def __contains__(self, layer: int) -> bool:
        return layer in self.vectors

    def to(self, device=None, dtype=None) -> SteeringVectors:
        return SteeringVectors(
            {k: v.to(device=device, dtype=dtype) for k, v in self.vectors.items()},
            dict(self.metadata),
        )

    def select(self, layers) -> SteeringVectors:
        """Keep only ``layers``."""
        layers = [layers] if isinstance(layers, int) else list(layers)
        missing = [layer for layer in layers if layer not in self.vectors]
        if missing:
            raise ValueError(f"no vector for layers {missing}; available: {self.layers}")
        return SteeringVectors({k: self.vectors[k] for k in layers}, dict(self.metadata))

    def normalized(self) -> SteeringVectors:
        """Unit-norm copy; a zero vector has no direction and raises.

        Example:
            >>> unit = vecs.normalized()
        """
        zero = [k for k in self.layers if not float(self.vectors[k].norm()) > 0]
        if zero:
            raise ValueError(
                f"the vector of layers {zero} is zero, so it has no direction to normalise: "
                "re-extract it or select other layers"
            )
        return SteeringVectors(
            {k: v / v.norm() for k, v in self.vectors.items()}, dict(self.metadata)
        )

    @property
    def residual_norms(self) -> dict[int, float]:
        """Median norm of the residual stream at each layer over real tokens, when recorded.

        :func:`reptune.extract.extract_vectors` records it from the pairs' texts; for vectors
        made another way, :meth:`with_residual_norms` adds it.
        """
        norms = self.metadata.get("residual_norms") or {}
        return {int(k): float(v) for k, v in norms.items()}

    def with_residual_norms(self, norms: dict[int, float]) -> SteeringVectors:
        """A copy that carries ``norms`` (``{layer: median residual norm}``).

        Example:
            >>> from reptune.extract import measure_residual_norms
            >>> vecs = vecs.with_residual_norms(measure_residual_norms(model, tok, texts, [3]))
        """
        bad = {k: v for k, v in norms.items() if not (isinstance(v, (int, float)) and v > 0)}
        if bad:
            raise ValueError(f"residual norms must be positive numbers, got {bad}")
        meta = dict(self.metadata)
        meta["residual_norms"] = {
            **self.residual_norms,
            **{int(k): float(v) for k, v in norms.items()},
        }
        return SteeringVectors(dict(self.vectors), meta)

    def check_unit(self, unit: str, layers=None) -> None:
        """Raise before any forward pass if coefficients in ``unit`` cannot be used at ``layers``.

        Example:
            >>> vecs.check_unit("residual_norm", [12])
        """
        check_coefficient_unit(unit)
        if unit == "raw":
            return
        layers = self.layers if layers is None else list(layers)
        missing = [layer for layer in layers if layer not in self.residual_norms]
        if missing:
            raise ValueError(
                f"coefficient_unit='residual_norm' needs the median residual norm of layers "
                f"{missing}, which these vectors do not carry: record it with "
                "vectors.with_residual_norms(reptune.extract.measure_residual_norms(model, tok, "
                "texts, layers)), or pass coefficient_unit='raw' for multiples of the vector"
            )
        zero = [layer for layer in layers if float(self.vectors[layer].norm()) == 0.0]
        if zero:
            raise ValueError(f"the vector of layers {zero} is zero: it has no direction to scale")

    def direction(self, layer: int, unit: str = DEFAULT_COEFFICIENT_UNIT) -> torch.Tensor:
        """What coefficient 1 adds at ``layer`` in ``unit`` (float32).

        ``"raw"``: the stored vector; ``"residual_norm"``: the vector rescaled to the layer's
        median residual norm, so coefficient ``c`` adds a vector of length ``c`` times a typical
        activation's.

        Example:
            >>> delta = 0.1 * vecs.direction(12)  # what SteeredModel(..., coefficient=0.1) adds
        """
        self.check_unit(unit, [layer])
        vec = self.vectors[layer].detach().float()
        if unit == "raw":
            return vec
        return vec * (self.residual_norms[layer] / vec.norm())

    def check_compatible(self, model, *, allow_mismatch: bool = False) -> None:
        """Raise a clear error if these vectors were made for a model unlike ``model``.

        The one check every path applies (load with ``model=``, ``from_pretrained``, the CLI,
        ``reptune serve``, :class:`~reptune.steering.SteeredModel`, the trainer). The recorded
        ``model_type``, number of decoder blocks and hidden size must equal the model's (fields
        the vectors do not record are not compared); ``allow_mismatch=True`` accepts a
        difference knowingly and records the accepted model in ``metadata["accepted_models"]``,
        so the steering, sweeps and servers built on these vectors accept it too. The vectors'
        width and layers must fit the model in any case.

        Example:
            >>> vecs.check_compatible(model)
            >>> vecs.check_compatible(other_model_same_width, allow_mismatch=True)
        """
        if not isinstance(allow_mismatch, bool):
            raise TypeError(f"allow_mismatch must be a bool, got {type(allow_mismatch).__name__}")
        actual = self.describe_model(model)
        made_for = self.metadata.get("model_name", "unknown")
        differ = [
            f"{key} {self.metadata[key]!r} vs {actual[key]!r}"
            for key in MODEL_FIELDS
            if self.metadata.get(key) is not None
            and actual.get(key) is not None
            and self.metadata[key] != actual[key]
        ]
        width, own = actual["hidden_size"], self.vectors[self.layers[0]].shape[0]
        if width != own:
            raise ValueError(
                f"vectors have hidden size {own} but the model's residual stream has {width}: "
                f"they were made for another model ({made_for}; hidden_size {own} vs {width}), "
                "and no flag can make them fit"
            )
        n = actual["num_layers"]
        too_deep = [layer for layer in self.layers if layer >= n]
        if too_deep:
            raise ValueError(
                f"vectors exist for layers {too_deep} but the model has only {n} decoder blocks: "
                f"they were made for another model ({made_for}); select layers below {n}"
            )
        fields = {key: actual[key] for key in MODEL_FIELDS}
        accepted = self.metadata.get("accepted_models") or []
        if not differ or fields in accepted:
            return
        if not allow_mismatch:
            raise ValueError(
                f"these vectors were made for another model ({made_for}, not "
                f"{actual['model_name']}): {'; '.join(differ)}. Use vectors extracted from this "
                "model, or pass allow_mismatch=True (--allow_vector_mismatch) to use them anyway"
            )
        logger.warning(
            "using vectors made for %s on %s: %s", made_for, actual["model_name"], differ
        )
        self.metadata["accepted_models"] = [*accepted, fields]

    # -- persistence -----------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``steering_vectors.safetensors`` + ``steering_vectors.json`` into ``directory``.

        The folder is written as a whole (:func:`reptune.io.atomic_folder`): a crash at any point
        leaves the previous save loadable, never a tensors file from one save beside the
        metadata of another. Other files in the folder (a card) are kept. The JSON records a
        checksum of the tensors.
        """
        directory = Path(directory)
        with atomic_folder(directory) as tmp:
            self.write_files(tmp)
        return directory

    def write_files(self, folder: str | Path) -> None:
        """Write the two files into ``folder`` as they are, for a folder being built whole.

        :meth:`save` is this inside :func:`reptune.io.atomic_folder`; call it yourself to put
        other files (plots, a card) into the same atomic folder.

        Example:
            >>> with atomic_folder("runs/v") as tmp:
            ...     vecs.write_files(tmp)
            ...     plot_layer_accuracy(vecs, tmp / "layer_accuracy.png")
        """
        folder = Path(folder)
        tensors = {f"layer.{k}": v.detach().cpu().contiguous() for k, v in self.vectors.items()}
        meta = dict(self.metadata)
        meta.update(
            format_version=FORMAT_VERSION,
            layers=self.layers,
            tensors_sha256=tensors_digest({k: tensors[f"layer.{k}"] for k in self.layers}),
        )
        meta.setdefault("reptune_version", __version__)
        text = json.dumps(meta, indent=2, sort_keys=True, default=str)
        save_file(tensors, str(folder / VECTORS_FILE))
        (folder / METADATA_FILE).write_text(text)

    @classmethod
    def load(
        cls, directory: str | Path, model=None, device=None, *, allow_mismatch: bool = False
    ) -> SteeringVectors:
        """Load vectors saved by :meth:`save`; with ``model``, check they fit it.

        The check is :meth:`check_compatible` (``allow_mismatch=True`` accepts vectors recorded
        for another model type or depth knowingly). A folder being replaced by another writer
        is read whole: the old version or the new one, never a mix.

        Example:
            >>> vecs = SteeringVectors.load("runs/honesty/vectors", model=model)
        """
        vecs = read_folder_whole(Path(directory), cls._read)
        if model is not None:
            vecs.check_compatible(model, allow_mismatch=allow_mismatch)
        if device is not None:
            vecs = vecs.to(device=device)
        return vecs

    @classmethod
    def _read(cls, directory: Path) -> SteeringVectors:
        vectors, meta = read_vector_files(directory)
        try:
            return cls(vectors, meta)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{directory} holds invalid vectors: {err}") from err

    @classmethod
    def describe_model(cls, model) -> dict[str, Any]:
        """Metadata fields describing ``model``."""
        inner = unwrap_model(model)
        architectures = getattr(inner.config, "architectures", None) or [type(inner).__name__]
        return {
            "model_name": getattr(inner, "name_or_path", None) or type(inner).__name__,
            "model_type": getattr(inner.config, "model_type", None),
            # The Hub commit the weights came from (None for a local folder).
            "model_revision": getattr(inner.config, "_commit_hash", None),
            "architecture": architectures[0],
            "hidden_size": hidden_size(model),
            "num_layers": num_layers(model),
        }

    # -- Hub -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        repo_id_or_folder: str | Path,
        *,
        revision: str | None = None,
        model=None,
        subfolder: str | None = None,
        token: str | None = None,
        cache_dir: str | Path | None = None,
        device=None,
        allow_mismatch: bool = False,
    ) -> SteeringVectors:
        """Load vectors from a Hub repo (at ``revision``) or a local folder.

        The files are found by :func:`reptune.vector_files.locate_vectors` (the root, then
        ``vectors/``, or ``subfolder``); with ``model=`` they are checked by
        :meth:`check_compatible`, as :meth:`load` does. To upload vectors, see
        :func:`reptune.publish.vector_hub.push_vectors_to_hub`.

        Example:
            >>> vecs = SteeringVectors.from_pretrained("me/smollm2-sentiment-vectors", model=model)
        """
        folder = locate_vectors(
            repo_id_or_folder,
            revision=revision,
            subfolder=subfolder,
            token=token,
            cache_dir=cache_dir,
        )
        return cls.load(folder, model=model, device=device, allow_mismatch=allow_mismatch)
