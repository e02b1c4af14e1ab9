"""What every settings model shares: frozen, unknown keys refused, and a bad value one line naming
the key and what it must be. The checks are pydantic's own (`Field(ge=...)`, `Literal[...]`, strict
types); the words come from each field's `description`."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError


class SettingsError(ValueError):
    """Values a settings model refused: (key relative to the model, what is wrong) pairs, which an
    enclosing model prefixes with its own keys; shown as one line."""

    def __init__(self, problems: list[tuple[list[str], str]], prefix: list[str] = ()):
        self.problems = problems
        super().__init__("; ".join(dict.fromkeys(_text([*prefix, *keys], what) for keys, what in problems)))


def extra_key(keys: list[str]) -> str:
    """The message for a key no settings model declares (pydantic's words, as before)."""
    return f"{'.'.join(keys)}: Extra inputs are not permitted"


def _text(keys: list[str], what: str) -> str:
    key = ".".join(keys)
    if what.startswith("must be "):
        return f"{key} {what}"
    return f"{key}: {what}" if key else what


class Strict(BaseModel):
    """Frozen settings; an unknown key is an error naming it; a value a field's constraints refuse
    is one `SettingsError`: `SECTION.FIELD must be DESCRIPTION, got VALUE`. (Fields may start with
    `model`.)"""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())
    section: ClassVar[str] = ""  # its key in a job config (`answer`), which its messages name

    def __init__(self, /, **data):
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise SettingsError(problems(e, type(self)), [self.section] if self.section else []) from None


def problems(error: ValidationError, model: type[BaseModel]) -> list[tuple[list[str], str]]:
    """pydantic's errors as (keys, what is wrong): for a field with a `description`, `must be
    DESCRIPTION, got VALUE`; a nested settings model's own problems under its key; otherwise
    pydantic's (or a validator's) message."""
    out = []
    for err in error.errors():
        names, field, current = [], None, model
        for part in err["loc"]:
            fields = getattr(current, "model_fields", {})
            if not isinstance(part, str) or part not in fields:
                break  # a union member's tag, a list index or an unknown key
            names.append(part)
            field = fields[part]
            annotation = field.annotation
            current = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        nested = (err.get("ctx") or {}).get("error")
        if isinstance(nested, SettingsError):
            out += [(names + keys, what) for keys, what in nested.problems]
        elif err["type"] == "extra_forbidden":
            out.append((names + [str(err["loc"][-1])], err["msg"]))
        elif field is not None and field.description and err["type"] != "value_error":
            out.append((names, f"must be {field.description}, got {err['input']!r}"))
        else:
            out.append((names, err["msg"].removeprefix("Value error, ")))
    return out


def check_choice(name: str, value, choices):
    """`value` if it is one of `choices`, else a ValueError naming `name` and the choices."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value
