"""The names records give a user's own objects: a defense or attack instance is named as the same setting would be
on the command line, so that the two give the same record ids.

A registered class configured by its constructor (``JPEG(quality=50)``) is spelled canonically (``jpeg(quality=50)``,
see :mod:`benchmark.core.options`); an unregistered class by its ``name`` attribute (else its class name in kebab
case) and its scalar constructor arguments that differ from their defaults.
"""
from __future__ import annotations

import inspect
import re
from typing import Any

from benchmark.core.attack import Attack
from benchmark.core.defense import ComposedDefense, Defense
from benchmark.core.errors import BenchError
from benchmark.core.options import NAME, spell
from benchmark.core.registry import ATTACKS, DEFENSES, Registry

SCALARS = (bool, int, float, str, type(None))


def kebab(text: str) -> str:
    """``MyDefense`` -> ``my-defense``."""
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", text)
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-") or "unnamed"


def _bound(obj: Any) -> dict[str, Any]:
    """The keyword values of the constructor call that made ``obj`` (positional ones bound to their names)."""
    args, kwargs = getattr(obj, "_given", ((), {}))
    try:
        bound = inspect.signature(type(obj).__init__).bind(obj, *args, **kwargs)
    except TypeError:
        return dict(kwargs)
    values = dict(bound.arguments)
    values.pop(next(iter(values)), None)  # self
    for name, param in inspect.signature(type(obj).__init__).parameters.items():
        if param.kind == param.VAR_KEYWORD and name in values:
            values.update(values.pop(name))
    return values


def _registered_name(registry: Registry, obj: Any) -> str | None:
    matches = [e.name for e in registry.entries() if e.factory is type(obj)]
    return matches[0] if matches else None


def spec_of(obj: Defense | Attack) -> str:
    """The canonical spelling that names ``obj`` in records."""
    if isinstance(obj, ComposedDefense):
        return "+".join(spec_of(p) for p in obj.parts)
    registry = DEFENSES if isinstance(obj, Defense) else ATTACKS
    values = _bound(obj)
    registered = _registered_name(registry, obj)
    if registered is not None:
        return registry.configure(registered, values).spec
    own = vars(obj).get("name")  # a name set on this instance: the user's own spelling of this setting
    name = own or getattr(type(obj), "name", "") or kebab(type(obj).__name__)
    if not NAME.fullmatch(name.split("(")[0]):
        raise BenchError(f"{type(obj).__name__}.name {name!r} cannot name records: use lower case letters, digits, "
                         "'.', '_' and '-'")
    if own:
        return own
    defaults = {k: p.default for k, p in inspect.signature(type(obj).__init__).parameters.items()}
    scalars = {k: v for k, v in values.items() if isinstance(v, SCALARS) and defaults.get(k) != v}
    others = [k for k, v in values.items() if not isinstance(v, SCALARS)]
    if others:
        raise BenchError(f"{type(obj).__name__} was given {', '.join(others)} (not a number, string or bool), which "
                         "a record cannot name; set a distinct `name` on the instance so its records are its own")
    return spell(name, scalars)


