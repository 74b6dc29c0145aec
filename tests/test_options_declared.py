"""Every built-in defense and attack declares the options its constructor accepts (``OPTIONS``, Option data), with the
constructor's own defaults, and every declaration builds: the command line and the records rely on them."""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from benchmark.core.errors import BenchError
from benchmark.core.options import Option, declared
from benchmark.core.registry import ATTACKS, DEFENSES, PROJECT

# constructor parameters that no scalar option can express, with the reason
EXEMPT = {("attack", "pgd-l2", "l2_eps"): "a list"}

CASES = [pytest.param(registry.what, entry.name, entry.factory, id=f"{registry.what}-{entry.name}")
         for registry in (DEFENSES, ATTACKS) for entry in registry.entries() if entry.origin.startswith(PROJECT)]

KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def constructor_parameters(factory: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The keyword parameters ``factory``'s constructor takes: its own ``__init__``'s and, where that forwards
    ``**kwargs`` to its parent, those of the next ``__init__`` up the MRO (the nearest one wins for a name)."""
    params: dict[str, inspect.Parameter] = {}
    for klass in factory.__mro__ if isinstance(factory, type) else ():
        if "__init__" not in vars(klass):
            continue
        signature = inspect.signature(klass.__init__)
        own = list(signature.parameters.values())[1:]  # without self
        for p in own:
            if p.kind in KEYWORD:
                params.setdefault(p.name, p)
        if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in own):
            break
    return params


def test_cases_cover_the_builtins():
    names = {values[1] for values in (case.values for case in CASES)}
    assert {"jpeg", "pixeldefend", "adaptive-pixeldefend", "invert-and-classify-robust", "pgd", "pgd-l2"} <= names


@pytest.mark.parametrize("what, name, factory", CASES)
def test_options_match_the_constructor(what, name, factory):
    options = declared(factory)
    params = constructor_parameters(factory)
    names = [o.name for o in options]
    assert len(names) == len(set(names)), f"{what} {name} declares an option twice: {names}"
    for o in options:
        assert isinstance(o, Option)
        assert o.type in (int, float, bool, str), f"{what} {name}: option {o.name} has type {o.type!r}"
        assert o.help and "\n" not in o.help, f"{what} {name}: option {o.name} needs a one-line help"
        assert o.name in params, f"{what} {name} declares {o.name!r}, which its constructor does not take"
        default = params[o.name].default
        assert default is not inspect.Parameter.empty, f"{what} {name}: parameter {o.name} has no default"
        assert o.default == default and type(o.default) is type(default), \
            f"{what} {name}: option {o.name} declares default {o.default!r}, the constructor has {default!r}"
    for param in params:
        if (what, name, param) in EXEMPT:
            assert param not in names
            continue
        assert param in names, f"{what} {name}: constructor parameter {param!r} is not declared in OPTIONS"


@pytest.mark.parametrize("what, name, factory", CASES)
def test_defaults_convert_and_build(what, name, factory):
    options = declared(factory)
    for o in options:
        if o.default is None:
            assert o.none_ok, f"{what} {name}: option {o.name} defaults to None but is not none_ok"
        assert o.convert(o.default, name) == o.default
        if o.choices is not None:
            assert all(isinstance(c, o.type) for c in o.choices)
    factory(**{o.name: o.default for o in options})  # cheap: construction trains or loads nothing


def test_aliases_fix_an_option_of_their_base():
    from defenses.pixeldefend import AdaptivePixelDefend, PixelAdaptivePixelDefend, PixelDefend

    assert AdaptivePixelDefend.ALIAS_OF == ("pixeldefend", {"adaptive": "image"})
    assert PixelAdaptivePixelDefend.ALIAS_OF == ("pixeldefend", {"adaptive": "pixel"})
    for alias in (AdaptivePixelDefend, PixelAdaptivePixelDefend):
        assert declared(alias) == declared(PixelDefend)
        base, fixed = alias.ALIAS_OF
        assert DEFENSES.get(base).factory is PixelDefend
        adaptive = {o.name: o for o in declared(alias)}["adaptive"]
        assert all(adaptive.convert(v, base) == v for v in fixed.values())
        assert alias().adaptive == fixed["adaptive"]


def test_out_of_range_value_is_refused():
    from defenses.jpeg import JPEG

    with pytest.raises(BenchError, match="quality"):
        JPEG.OPTIONS[0].convert("0", "jpeg")
    assert JPEG.OPTIONS[0].convert("50", "jpeg") == 50
