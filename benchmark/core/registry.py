"""Registries of defenses, attacks, models and data sets.

Built-ins register at their definition site with a decorator (``@register_attack("fgsm")``). Other packages register
through entry points in the groups ``bench.defenses``, ``bench.attacks``, ``bench.models`` and ``bench.datasets``: an
entry point may name a module (importing it runs its decorators) or the factory itself (registered under the entry
point's name). Entry points load lazily, on the first look-up; ``BENCH_DISABLE_PLUGIN_AUTOLOAD=1`` turns them off.
A plugin that fails to import is remembered by name in :attr:`Registry.broken` and never takes the registry down,
whatever it raises (``sys.exit()`` at import included); only the user's Ctrl-C goes through.

Registering a name twice is an error that names both origins: two plugins silently shadowing each other would corrupt
a leaderboard.
"""
from __future__ import annotations

import contextvars
import difflib
import fnmatch
import importlib
import importlib.metadata as md
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from benchmark.core.errors import BenchError
from benchmark.core.options import (
    check_options,
    declared,
    non_default,
    parse_item,
    results_changing,
    spell,
    split_top,
)

PROJECT = "defensebench"

# While an entry point is being loaded, decorators inside it attribute their entries to its distribution.
_loading_origin: contextvars.ContextVar[str | None] = contextvars.ContextVar("_loading_origin", default=None)


def _project_origin() -> str:
    try:
        return f"{PROJECT} {md.version(PROJECT)}"
    except md.PackageNotFoundError:  # running from a source tree that was never installed
        return f"{PROJECT} (source)"


@dataclass(frozen=True)
class Entry:
    """One registered name: its factory (a class or function), where it came from and what it declares."""

    name: str
    factory: Callable[..., Any]
    origin: str

    def describe(self) -> dict[str, str]:
        """The entry's kind, norm or traits, as the factory declares them (class data, not an instance)."""
        describe = getattr(self.factory, "describe", None)
        return dict(describe()) if callable(describe) else {}

    @property
    def groups(self) -> tuple[str, ...]:
        """Named sets the entry belongs to (e.g. ``paper``), selectable on the command line like a name."""
        return tuple(getattr(self.factory, "groups", ()) or ())


def natural_key(name: str) -> list[Any]:
    """Sort key that puts ``pgd2`` before ``pgd10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


@dataclass(frozen=True)
class Configured:
    """A registered entry with its options set: what a selection item such as ``pgd(steps=200)`` resolves to."""

    spec: str  # the canonical spelling: records name the entry by it (see benchmark.core.options)
    entry: Entry
    options: dict[str, Any]  # the constructor's keyword arguments (non-default values only)

    def build(self) -> Any:
        obj = self.entry.factory(**self.options)
        if self.spec != self.entry.name:
            obj.name = self.spec  # this instance is the configured entry, not the registered default
        return obj


@dataclass
class Registry:
    """A named collection of factories, filled by decorators and entry points."""

    what: str  # singular noun used in messages: "attack", "defense", ...
    group: str  # entry-point group
    builtin_modules: tuple[str, ...] = ()
    _entries: dict[str, Entry] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)
    _loaded: bool = False

    # -- registration ---------------------------------------------------------------------------------------------
    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: ``@registry.register("name")`` at the definition site."""

        def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
            self.add(name, factory, _loading_origin.get() or _project_origin())
            return factory

        return decorate

    def add(self, name: str, factory: Callable[..., Any], origin: str) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
            raise BenchError(
                f"cannot register {self.what} {name!r} from {origin}: names are lower case letters, digits, '.', '_' "
                "and '-' (no '+' or ',', which separate names on the command line)"
            )
        old = self._entries.get(name)
        if old is not None:
            if old.factory is factory:
                return
            raise BenchError(
                f"{self.what} {name!r} is registered twice: by {old.origin} and by {origin}; "
                "rename one of them or uninstall one package"
            )
        if hasattr(factory, "name") and isinstance(factory, type):
            factory.name = name  # the class knows the name it is registered under
        self._entries[name] = Entry(name, factory, origin)

    # -- loading --------------------------------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self.builtin_modules:
            importlib.import_module(module)
        if os.environ.get("BENCH_DISABLE_PLUGIN_AUTOLOAD"):
            return
        for ep in sorted(md.entry_points(group=self.group), key=lambda e: e.name):
            self._load_entry_point(ep)

    def _load_entry_point(self, ep: md.EntryPoint) -> None:
        dist = getattr(ep, "dist", None)
        origin = f"{dist.name} {dist.version}" if dist is not None else f"entry point {ep.value}"
        token = _loading_origin.set(origin)
        try:
            loaded = ep.load()
        except KeyboardInterrupt:  # the user's Ctrl-C (or a SIGTERM under `bench run`), not the plugin's doing
            raise
        except BaseException as exc:  # a broken plugin is reported by name, never a crash: even sys.exit() at import
            self.broken[ep.name] = f"{origin}: {type(exc).__name__}" + (f": {exc}" if str(exc) else "")
            return
        finally:
            _loading_origin.reset(token)
        if callable(loaded) and not any(e.factory is loaded for e in self._entries.values()):
            try:
                self.add(ep.name, loaded, origin)
            except BenchError as exc:
                self.broken[ep.name] = str(exc)

    # -- look-up --------------------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._entries, key=natural_key)

    def entries(self) -> list[Entry]:
        return [self._entries[name] for name in self.names()]

    def named(self, spec: str | Iterable[str]) -> set[str]:
        """The entries a selection spells out one by one (not through ``all``, a group or a wildcard), canonically."""
        items = [s.strip() for s in (split_top(spec, ",") if isinstance(spec, str) else spec)]
        return {self.configure(i).spec for i in items if parse_item(i)[0] in self._entries}

    # -- options --------------------------------------------------------------------------------------------------
    def configure(self, item: str, values: dict[str, Any] | None = None) -> Configured:
        """``name`` or ``name(key=value, ...)``: the entry with its options checked, under its canonical spelling.

        An entry that declares ``ALIAS_OF = (base, options)`` is that base entry with those options, and the base
        entry with those options is spelled as the alias (``pixeldefend(adaptive=image)`` is
        ``adaptive-pixeldefend``): records written under an alias keep their ids. ``values`` are options given as
        Python values (a constructor's keyword arguments) rather than text."""
        name, raw = parse_item(item)
        entry = self.get(name)
        values = check_options(entry.factory, name, {**raw, **(values or {})})
        base_name, fixed = getattr(entry.factory, "ALIAS_OF", None) or (name, {})
        base = self.get(base_name)
        full = {**fixed, **values}
        alias, alias_fixed = base, {}
        for other in self.entries():
            of = getattr(other.factory, "ALIAS_OF", None)
            if of and of[0] == base_name and all(full.get(k) == v for k, v in of[1].items()) \
                    and len(of[1]) > len(alias_fixed):
                alias, alias_fixed = other, of[1]
        rest = non_default(base.factory, {k: v for k, v in full.items() if k not in alias_fixed})
        return Configured(spell(alias.name, results_changing(base.factory, rest)), alias, rest)

    def build(self, item: str) -> Any:
        """An instance of ``item`` (a name, or a name with options) configured by its constructor."""
        return self.configure(item).build()

    def options_of(self, name: str) -> tuple[Any, ...]:
        return declared(self.get(name).factory)

    def groups(self) -> list[str]:
        return sorted({g for e in self.entries() for g in e.groups})

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def get(self, name: str) -> Entry:
        names = self.names()
        if name in self._entries:
            return self._entries[name]
        raise BenchError(self.unknown_message(name, names))

    def unknown_message(self, name: str, names: list[str]) -> str:
        groups = self.groups()
        close = difflib.get_close_matches(name, names + groups, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        broken = f" (plugins that failed to load: {', '.join(sorted(self.broken))})" if self.broken else ""
        grouped = f"; groups: {', '.join(groups)}" if groups else ""
        return f"unknown {self.what} {name!r}; {hint}valid {self.what}s: {', '.join(names)}{grouped}{broken}"

    def select(self, spec: str | Iterable[str]) -> list[str]:
        """Resolve a selection: ``all``, ``fgsm,bim``, ``all,-lbfgs``, ``pgd*``, ``paper`` (comma-separated, in order).

        Items add names; ``-item`` removes them. A group (``paper``: the attacks of the PixelDefend paper and its
        reproduction) stands for its members; a registered name wins over a group of the same name. Wildcards follow :mod:`fnmatch`. The result keeps the order in which
        names were first added, without duplicates.
        """
        items = [s.strip() for s in (split_top(spec, ",") if isinstance(spec, str) else spec)]
        items = [s for s in items if s]
        if not items:
            raise BenchError(f"empty {self.what} selection; give a name, a list such as 'a,b', or 'all'")
        names = self.names()
        chosen: list[str] = []
        for item in items:
            remove = item.startswith("-")
            pattern = item[1:] if remove else item
            if pattern == "all":
                matched = names
            elif pattern not in self._entries and pattern in self.groups():
                matched = [e.name for e in self.entries() if pattern in e.groups]
            elif any(ch in pattern for ch in "*?["):
                matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
                if not matched:
                    raise BenchError(f"{self.what} pattern {pattern!r} matches nothing; valid {self.what}s: {', '.join(names)}")
            elif "+" in pattern:  # a composition (defenses): each part configured, the whole spelled canonically
                matched = ["+".join(self.configure(part).spec for part in split_top(pattern, "+"))]
            else:
                matched = [self.configure(pattern).spec]
            if remove:
                chosen = [n for n in chosen if n not in matched]
            else:
                chosen += [n for n in matched if n not in chosen]
        if not chosen:
            raise BenchError(f"the {self.what} selection {','.join(items)!r} leaves nothing to run")
        return chosen


DEFENSES = Registry("defense", "bench.defenses", ("defenses",))
ATTACKS = Registry("attack", "bench.attacks", ("attacks",))
MODELS = Registry("model", "bench.models", ("models",))
DATASETS = Registry("dataset", "bench.datasets", ("benchmark.data.builtin",))

register_defense = DEFENSES.register
register_attack = ATTACKS.register
register_model = MODELS.register
register_dataset = DATASETS.register

REGISTRIES = {"defenses": DEFENSES, "attacks": ATTACKS, "models": MODELS, "datasets": DATASETS}
