"""Checks of chat-completions requests: each problem becomes a :class:`RequestError` that the
server answers with a 4xx error in the OpenAI shape, before anything is queued or run."""

from __future__ import annotations

import math

from ..hooks import validate_positions
from ..steering import MODES, SteeredModel
from ..vectors import COEFFICIENT_UNITS, DEFAULT_COEFFICIENT_UNIT, SteeringVectors

__all__ = [
    "RequestError",
    "STEERING_KEYS",
    "check_integer",
    "check_message",
    "check_number",
    "check_steering",
]

ROLES = ("system", "user", "assistant")
#: The largest steering coefficient a request may ask for (in either unit): beyond it the
#: activations leave the range of half precision and the answer would be noise.
MAX_COEFFICIENT = 1e4
#: The options of a request's ``reptune`` object (those of SteeredModel).
STEERING_KEYS = ("layers", "coefficient", "coefficient_unit", "mode", "positions")


class RequestError(ValueError):
    """A request the server refuses; becomes an OpenAI-shaped error answer."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status=400):
        super().__init__(message)
        self.param, self.code, self.status = param, code, status


def check_number(
    body: dict, name: str, default: float, low: float, high: float, prefix: str = ""
) -> float:
    """``body[name]`` as a finite float in ``[low, high]`` (``default`` when absent or null)."""
    value = body.get(name, default)
    if value is None:
        return default
    label = prefix + name
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{label} must be a finite number, got {_short(value)}", label)
    if isinstance(value, int) and not -(10**300) < value < 10**300:  # float() would overflow
        raise RequestError(f"{label} must be between {low} and {high}, got an integer of "
                           f"{len(str(abs(value)))} digits", label)  # fmt: skip
    if not math.isfinite(value):
        raise RequestError(f"{label} must be a finite number, got {value!r}", label)
    if not low <= value <= high:
        raise RequestError(f"{label} must be between {low} and {high}, got {value}", label)
    return float(value)


def _short(value, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (a request can send megabytes)."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**limit else "a huge int"
    return text if len(text) <= limit else text[:limit] + "..."


def check_integer(value, name: str, low: int, high: int) -> int:
    """``value`` if it is an integer (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{name} must be an integer, got {_short(value)}", name)
    if not low <= value <= high:
        raise RequestError(f"{name} must be between {low} and {high}, got {_short(value)}", name)
    return value


def check_message(message, index: int) -> dict:
    """``{role, content}`` of chat message ``index``; text content parts are joined."""
    if not isinstance(message, dict):
        raise RequestError(f"messages[{index}] must be an object with role and content", "messages")
    role, content = message.get("role"), message.get("content")
    if role not in ROLES:
        raise RequestError(
            f"messages[{index}].role must be one of {ROLES}, got {_short(role)}", "messages"
        )
    if isinstance(content, list):  # OpenAI content parts: only text is understood here
        if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
            raise RequestError(
                f"messages[{index}].content: only text parts are supported", "messages"
            )
        texts = [p.get("text", "") for p in content]
        if not all(isinstance(t, str) for t in texts):
            raise RequestError(f"messages[{index}].content: text must be a string", "messages")
        content = "".join(texts)
    if not isinstance(content, str):
        raise RequestError(f"messages[{index}].content must be a string", "messages")
    return {"role": role, "content": content}


def check_steering(
    spec, model, vectors: SteeringVectors | None
) -> tuple[SteeredModel | None, dict | None]:
    """The SteeredModel a request's ``reptune`` object asks for, and the steering it applies.

    ``(None, None)`` when the request asks for none.

    Example:
        >>> steered, applied = check_steering({"layers": [10], "coefficient": 0.1}, model, vecs)
    """
    if spec is None:
        return None, None
    if not isinstance(spec, dict):
        raise RequestError("reptune must be an object such as {'layers': [10], ...}", "reptune")
    unknown = sorted(set(spec) - set(STEERING_KEYS))
    if unknown:
        raise RequestError(f"unknown reptune option(s) {unknown}: use {STEERING_KEYS}", "reptune")
    if vectors is None:
        raise RequestError(
            "this server holds no steering vectors: start it with --vectors FOLDER", "reptune"
        )
    layers = spec.get("layers", vectors.layers)
    layers = [layers] if isinstance(layers, int) and not isinstance(layers, bool) else layers
    if not isinstance(layers, list) or not layers:
        raise RequestError("reptune.layers must be a layer index or a list of them", "layers")
    for layer in layers:
        check_integer(layer, "reptune.layers", 0, 10**6)
    missing = sorted(set(layers) - set(vectors.layers))
    if missing:
        raise RequestError(
            f"unknown layer(s) {missing}: the served vectors have layers {vectors.layers}",
            "layers",
            "unknown_layer",
        )
    mode = spec.get("mode", "add")
    if mode not in MODES:
        raise RequestError(f"reptune.mode must be one of {MODES}, got {_short(mode)}", "mode")
    unit = spec.get("coefficient_unit", DEFAULT_COEFFICIENT_UNIT)
    if unit not in COEFFICIENT_UNITS:
        raise RequestError(
            f"reptune.coefficient_unit must be one of {COEFFICIENT_UNITS}, got {_short(unit)}",
            "coefficient_unit",
        )
    if mode == "add" and spec.get("coefficient") is None:
        raise RequestError(
            "reptune.coefficient is required with mode 'add' and must be a number, not null",
            "coefficient",
        )
    if "coefficient" in spec and spec["coefficient"] is None:
        raise RequestError(
            "reptune.coefficient is null: give a number or leave it out", "coefficient"
        )
    coefficient = check_number(
        spec, "coefficient", 0.0, -MAX_COEFFICIENT, MAX_COEFFICIENT, "reptune."
    )
    positions = spec.get("positions", "all")
    if isinstance(positions, list):
        for offset in positions:
            check_integer(offset, "reptune.positions", -(10**6), 10**6)
    elif not isinstance(positions, str):
        raise RequestError("reptune.positions must be a name or a list of offsets", "positions")
    try:
        validate_positions(positions)
        steered = SteeredModel(
            model, vectors, layers, coefficient, mode, positions,
            coefficient_unit=unit,
        )  # fmt: skip
    except (ValueError, TypeError) as err:
        raise RequestError(f"reptune: {err}", "reptune") from None
    steering = dict(layers=layers, coefficient=coefficient, coefficient_unit=unit, mode=mode)
    return steered, {**steering, "positions": positions}
