"""What every settings model shares: frozen, unknown keys refused, one message for a bad choice."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Frozen settings; an unknown key is an error naming it. (Fields may start with `model`.)"""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


def check_choice(name: str, value, choices):
    """`value` if it is one of `choices`, else a ValueError naming `name` and the choices."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value
