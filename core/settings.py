"""Settings objects: the knobs of an attack, a defence or a victim's retraining, validated once.

Each registry entry (``core.attacks.ATTACKS``, ``core.defences.DEFENCES``,
``core.victim.VICTIM_HEADS``) names a frozen dataclass derived from ``Settings``. Its fields carry
``knob`` metadata (what it means, its range, the name users know from ART), so the CLI's flags, the
experiment config's keys, the dashboard's widgets and the tests are all derived from one place and
no caller repeats a default or a bound.
"""

from __future__ import annotations

import math

import numpy as np
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from typing import Any, get_type_hints


def knob(default: Any, help: str, lo: float | None = None, hi: float | None = None, *,
         art: str | None = None, optional: bool = False, widget: tuple | None = None,
         choices: tuple | None = None) -> Any:
    """A settings field: ``default``, a one-line ``help``, an inclusive range, the name of the same
    knob in ART (``max_iter``, ``similarity_coeff``, ``watermark``...), ``optional`` when None is
    allowed (a derived default, filled in by the entry's ``defaults`` hook); ``widget``: (label, lo,
    hi) when the dashboard's lab offers the knob, in a range a class can explore; ``choices``: the
    values a named option may take."""
    return field(default=default, metadata={"help": help, "lo": lo, "hi": hi, "art": art, "optional": optional,
                                            "widget": widget, "choices": choices})


@dataclass(frozen=True)
class Widget:
    """A knob as the dashboard offers it: what the page draws and the value's range."""

    name: str
    label: str
    lo: float
    hi: float
    default: Any
    help: str


@dataclass(frozen=True)
class Settings:
    """Base of every settings dataclass: range checks from the fields' ``knob`` metadata."""

    def __post_init__(self) -> None:
        hints = get_type_hints(type(self))
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if value is None:
                if not meta.get("optional"):
                    raise ValueError(f"{f.name} must be set")
                continue
            want = _base_type(hints[f.name])
            if isinstance(value, (np.integer, np.floating, np.bool_)):  # numpy scalars: their Python value
                value = value.item()
                object.__setattr__(self, f.name, value)
            if want is bool and not isinstance(value, bool):
                raise ValueError(f"{f.name} must be true or false, got {value!r}")
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
                value = float(value)
            if want in (int, float) and (isinstance(value, bool) or not isinstance(value, want)):
                raise ValueError(f"{f.name} must be a {want.__name__}, got {value!r}")
            if meta.get("choices") is not None and value not in meta["choices"]:
                raise ValueError(f"{f.name} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
            if want is float and not math.isfinite(value):
                raise ValueError(f"{f.name} must be finite")
            lo, hi = meta.get("lo"), meta.get("hi")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ValueError(f"{f.name} must be in [{lo}, {hi}], got {value}")

    @classmethod
    def knobs(cls) -> dict[str, Field]:
        return {f.name: f for f in fields(cls)}

    @classmethod
    def widgets(cls) -> list[Widget]:
        """The knobs the dashboard's lab offers (``knob(widget=...)``), in field order."""
        return [Widget(f.name, f.metadata["widget"][0], f.metadata["widget"][1], f.metadata["widget"][2],
                       default_of(f), f.metadata["help"]) for f in fields(cls) if f.metadata.get("widget")]

    @classmethod
    def from_values(cls, values: dict, where: str = "") -> "Settings":
        """Build from plain values; a key this kind of settings does not have is an error, not
        silently dropped (a typo in a config must not run the default)."""
        unknown = set(values) - set(cls.knobs())
        if unknown:
            raise ValueError(f"{where or cls.__name__}: {', '.join(sorted(unknown))} "
                             f"{'is not a setting' if len(unknown) == 1 else 'are not settings'} "
                             f"(known: {', '.join(cls.knobs())})")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes) -> "Settings":
        return self.from_values({**self.to_dict(), **changes})


@dataclass(frozen=True)
class NoSettings(Settings):
    """The settings of an entry with no knobs (a defence, a victim head)."""


def _base_type(hint: Any) -> type:
    """int / float / str / bool from a field's type hint (``int | None`` -> int)."""
    args = getattr(hint, "__args__", None)
    if args:
        hint = next(a for a in args if a is not type(None))
    return hint if isinstance(hint, type) else object


def default_of(f: Field) -> Any:
    return f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]


def knob_type(f: Field, owner: type) -> type:
    return _base_type(get_type_hints(owner)[f.name])
