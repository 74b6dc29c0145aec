"""Options of defenses and attacks, declared as data, and the selection syntax that sets them.

Each defense and attack declares what its constructor accepts as class data::

    OPTIONS = (Option("quality", int, 75, "JPEG quality", low=1, high=100),)

``bench list defenses --options`` prints these declarations, the command line sets them in a selection
(``jpeg(quality=50)+pixeldefend(eps_defend=16/255)``, ``pgd(steps=200)``) and Python passes them to the constructor.
A configured entry has a canonical spelling (options in declaration order, defaults left out, floats as ``k/255``
where exact): it names the defense or attack in records, so two settings never share a record id, and a setting
that an alias stands for (``adaptive-pixeldefend`` is ``pixeldefend(adaptive=image)``) keeps the alias's name.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Sequence

from benchmark.core.errors import BenchError

NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")


def positive_int(name: str, value: Any) -> int:
    """``value`` if it is a positive integer (not a bool or a float), else one clear error."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BenchError(f"{name} must be a positive integer, not {value!r}")
    return value


@dataclass(frozen=True)
class Option:
    """One constructor argument of a defense or an attack: its name, type, default, allowed values and meaning.

    ``type`` is int, float, bool or str. ``low``/``high`` bound numbers (inclusive), ``choices`` lists the allowed
    values; ``none_ok`` lets None through (a default that the data set settles, e.g. PixelDefend's eps_defend)."""

    name: str
    type: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    none_ok: bool = False
    changes_results: bool = True  # False: speed or memory only (a batch size); left out of the canonical spelling

    def allowed(self) -> str:
        """The allowed values in words: ``int in [1, 100]``, ``one of image, pixel``."""
        if self.choices is not None:
            text = "one of " + ", ".join(format_value(c) for c in self.choices)
        elif self.low is not None or self.high is not None:
            lo = "-inf" if self.low is None else format_value(self.low)
            hi = "inf" if self.high is None else format_value(self.high)
            text = f"{self.type.__name__} in [{lo}, {hi}]"
        else:
            text = self.type.__name__
        return text + (" or none" if self.none_ok else "")

    def convert(self, value: Any, owner: str) -> Any:
        """``value`` (text from the command line, or a Python value) as this option's type, checked; else one line
        that names the option, what was wrong and what would be right."""
        where = f"option {self.name} of {owner}"
        if isinstance(value, str):
            value = _parse_text(value, self.type)
        if value is None:
            if self.none_ok:
                return None
            raise BenchError(f"{where} cannot be none; give {self.allowed()}")
        try:
            value = _coerce(value, self.type)
        except (TypeError, ValueError):
            raise BenchError(f"{where} must be {self.allowed()}, not {value!r}") from None
        if self.choices is not None and value not in self.choices:
            raise BenchError(f"{where} must be {self.allowed()}, not {format_value(value)}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise BenchError(f"{where} must be {self.allowed()}, not {format_value(value)}")
        return value

    def describe(self) -> dict[str, str]:
        return {"option": self.name, "type": self.allowed(), "default": format_value(self.default),
                "meaning": self.help}


def _parse_text(text: str, kind: type) -> Any:
    raw = text.strip()
    if raw.lower() in ("none", "null"):
        return None
    if kind is bool:
        lowered = raw.lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        raise ValueError(raw)
    if kind in (int, float):
        try:
            number = Fraction(raw) if "/" not in raw else Fraction(*(Fraction(p.strip()) for p in raw.split("/")))
        except (ValueError, ZeroDivisionError, TypeError):
            return raw  # reported by _coerce with the option's allowed values
        return number
    return raw


def _coerce(value: Any, kind: type) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise TypeError(value)
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, Fraction)) or int(value) != value:
            raise TypeError(value)
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)):
            raise TypeError(value)
        return float(value)
    if not isinstance(value, kind):
        raise TypeError(value)
    return value


def format_value(value: Any) -> str:
    """A value as the canonical spelling writes it: floats in their shortest form (``0.8``), or as ``k/255`` where that
    is exact and the decimal is not short (``16/255``, not ``0.0627451``); booleans and None in lower case."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        short = repr(value)
        k = value * 255
        if len(short) > 8 and abs(k - round(k)) < 1e-9:
            return f"{int(round(k))}/255"
        return short if len(short) <= 8 else f"{value:.6g}"
    return str(value)


# -- the selection syntax ---------------------------------------------------------------------------------------------

def split_top(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` outside parentheses: ``pgd(steps=2,restarts=3),fgsm`` is two items."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise BenchError(f"unbalanced ')' in {text!r}; write options as name(key=value, ...)")
        if ch == separator and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth:
        raise BenchError(f"unbalanced '(' in {text!r}; write options as name(key=value, ...)")
    parts.append("".join(current))
    return parts


def parse_item(item: str) -> tuple[str, dict[str, str]]:
    """``pgd(steps=200, rel_stepsize=0.01)`` -> ("pgd", {"steps": "200", "rel_stepsize": "0.01"})."""
    item = item.strip()
    match = re.fullmatch(r"([^()]+?)\s*(?:\((.*)\))?", item, flags=re.S)
    if match is None:
        raise BenchError(f"malformed selection {item!r}; write a name or name(key=value, ...)")
    name, body = match.group(1).strip(), match.group(2)
    options: dict[str, str] = {}
    if body is not None and body.strip():
        for pair in split_top(body, ","):
            key, eq, value = pair.partition("=")
            key = key.strip()
            if not eq or not key or not value.strip():
                raise BenchError(f"malformed option {pair.strip()!r} in {item!r}; write key=value, e.g. steps=200")
            if key in options:
                raise BenchError(f"option {key} is given twice in {item!r}")
            options[key] = value.strip()
    return name, options


def declared(factory: Callable[..., Any]) -> tuple[Option, ...]:
    return tuple(getattr(factory, "OPTIONS", ()) or ())


def check_options(factory: Callable[..., Any], owner: str, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` (text or Python values) converted and checked against what ``factory`` declares."""
    options = {o.name: o for o in declared(factory)}
    checked = {}
    for key, value in given.items():
        if key not in options:
            valid = ", ".join(f"{o.name} ({o.allowed()})" for o in options.values()) or "none"
            raise BenchError(f"{owner} has no option {key!r}; its options: {valid}")
        checked[key] = options[key].convert(value, owner)
    return checked


def non_default(factory: Callable[..., Any], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` less those equal to their declared default, in declaration order."""
    order = {o.name: i for i, o in enumerate(declared(factory))}
    defaults = {o.name: o.default for o in declared(factory)}
    kept = {k: v for k, v in values.items() if k not in defaults or v != defaults[k]}
    return dict(sorted(kept.items(), key=lambda kv: order.get(kv[0], len(order))))


def results_changing(factory: Callable[..., Any], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` less the options that change only speed or memory (they do not name a setting)."""
    speed_only = {o.name for o in declared(factory) if not o.changes_results}
    return {k: v for k, v in values.items() if k not in speed_only}


def spell(name: str, values: dict[str, Any]) -> str:
    """The canonical spelling ``name(key=value,...)`` (just ``name`` without options)."""
    if not values:
        return name
    return name + "(" + ",".join(f"{k}={format_value(v)}" for k, v in values.items()) + ")"


def options_table(factories: Sequence[tuple[str, Callable[..., Any]]]) -> list[dict[str, str]]:
    """One row per declared option of each named factory: what ``bench list --options`` prints."""
    return [{"name": name, **o.describe()} for name, factory in factories for o in declared(factory)]
