"""Plugins and the registry.

End to end: the packages under ``tests/plugins`` are built into wheels, installed into a temporary site directory and
put on ``PYTHONPATH`` of a ``bench`` subprocess, which finds them through their entry points (importlib.metadata reads
the ``*.dist-info`` there). ``bench-plugin-demo`` supplies defenses in both entry-point forms, an attack and a tiny
classifier; ``bench-plugin-broken`` supplies plugins that must fail by name without taking the command down.

In process: fresh :class:`Registry` objects (never the global ones) for duplicate names, unknown names, selections,
entry-point loading from a fake distribution and the autoload switch.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from benchmark.core.errors import BenchError
from benchmark.core.registry import Registry, natural_key

PLUGINS = Path(__file__).parent / "plugins"
PLUGIN_PACKAGES = ("bench_plugin_demo", "bench_plugin_broken")
DEMO_ORIGIN = "bench-plugin-demo 0.3.1"
BROKEN_ORIGIN = "bench-plugin-broken 0.0.1"
SUBPROCESS_TIMEOUT = 900  # seconds; generous, the machine may be shared


# ---------------------------------------------------------------------------------------------------------------------
# end to end: build, install, run the CLI
# ---------------------------------------------------------------------------------------------------------------------
def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args, "--no-index", "--disable-pip-version-check", "--no-input", "-q"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site directory holding the two plugin packages, installed from wheels built offline."""
    pytest.importorskip("setuptools", reason="building the plugin wheels without build isolation needs setuptools")
    root = tmp_path_factory.mktemp("plugins")
    sources = []
    for package in PLUGIN_PACKAGES:  # build from a copy: setuptools writes build/ and *.egg-info next to the sources
        copy = root / "src" / package
        shutil.copytree(PLUGINS / package, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        sources.append(str(copy))
    wheels = root / "wheels"
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir", "-w", str(wheels), *sources)
    built = sorted(str(w) for w in wheels.glob("*.whl"))
    assert len(built) == len(PLUGIN_PACKAGES), built
    site = root / "site"
    _pip("install", "--no-deps", "--no-compile", "--target", str(site), *built)
    assert (site / "bench_plugin_demo-0.3.1.dist-info" / "entry_points.txt").exists()
    return site


@pytest.fixture(scope="module")
def bench(plugin_site: Path, isolated_cache: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``bench ARGS`` in a subprocess that sees the installed plugins; runs in a temporary directory."""
    cwd = tmp_path_factory.mktemp("bench-cwd")

    def run(*args: str, **env_overrides: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env.pop("BENCH_DISABLE_PLUGIN_AUTOLOAD", None)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(plugin_site), env.get("PYTHONPATH", "")) if p)
        env["BENCH_CACHE"] = str(isolated_cache)  # shared with the session: a classifier is trained once
        env["BENCH_QUIET"] = "1"
        env.setdefault("OMP_NUM_THREADS", "1")  # tiny models: one thread is as fast, and kinder to a shared machine
        env.update(env_overrides)
        return subprocess.run([sys.executable, "-m", "benchmark.cli", *args], capture_output=True, text=True,
                              env=env, cwd=cwd, timeout=SUBPROCESS_TIMEOUT)

    return run


def _table_rows(stdout: str) -> dict[str, list[str]]:
    """The rows of ``bench list`` tables, by name: columns are separated by two or more spaces."""
    rows = {}
    for line in stdout.splitlines():
        fields = re.split(r"\s{2,}", line.strip())
        if len(fields) > 2 and not set(fields[0]) <= {"-"} and fields[0] != "name":
            rows[fields[0]] = fields
    return rows


def _warnings(stderr: str) -> dict[str, str]:
    """``bench: warning: <kind> plugin '<name>' failed to load (...)`` lines, by name."""
    return {m.group(1): line for line in stderr.splitlines()
            if (m := re.match(r"bench: warning: \w+ plugin '([^']+)' failed to load", line))}


@pytest.fixture(scope="module")
def listed_defenses(bench) -> subprocess.CompletedProcess[str]:
    return bench("list", "defenses")


def test_list_shows_plugin_defenses_with_their_origin(listed_defenses) -> None:
    assert listed_defenses.returncode == 0, listed_defenses.stderr
    rows = _table_rows(listed_defenses.stdout)
    assert DEMO_ORIGIN in rows["demo-blur"], rows["demo-blur"]  # module form: the decorator inside registered it
    assert DEMO_ORIGIN in rows["demo-quantize"], rows["demo-quantize"]  # factory form: the entry point's name
    assert "purifies, differentiable" in rows["demo-blur"]
    assert "purifies, non-differentiable" in rows["demo-quantize"]


def test_broken_plugins_are_reported_by_name_and_the_builtins_still_listed(listed_defenses) -> None:
    assert listed_defenses.returncode == 0, listed_defenses.stderr
    assert "Traceback" not in listed_defenses.stderr
    warnings = _warnings(listed_defenses.stderr)
    assert "ModuleNotFoundError" in warnings["broken-defense"] and BROKEN_ORIGIN in warnings["broken-defense"]
    assert "broken-attack" in warnings  # every group is checked, whichever one is listed
    rows = _table_rows(listed_defenses.stdout)
    assert rows["none"][-2].startswith("defensebench ")  # the built-in kept its name and origin
    assert {"feature-squeezing", "adv-fgsm", "label-smoothing"} <= set(rows)
    assert not any(name in rows for name in ("broken-defense", "shadow-none"))


@pytest.mark.parametrize("entry_point", ["none", "shadow-none"])  # factory form; module form with a decorator
def test_a_plugin_claiming_a_builtin_name_is_an_error_naming_both_origins(listed_defenses, entry_point: str) -> None:
    line = _warnings(listed_defenses.stderr)[entry_point]
    assert "'none' is registered twice" in line
    assert "defensebench " in line and BROKEN_ORIGIN in line, line


def test_autoload_switch_hides_every_plugin(bench) -> None:
    proc = bench("list", "defenses", BENCH_DISABLE_PLUGIN_AUTOLOAD="1")
    assert proc.returncode == 0, proc.stderr
    rows = _table_rows(proc.stdout)
    assert "none" in rows and not any(name.startswith("demo-") for name in rows)
    assert "failed to load" not in proc.stderr


def test_an_unknown_name_lists_plugin_names_and_broken_plugins(bench, tmp_path: Path) -> None:
    proc = bench("run", "--dataset", "digits", "--defense", "demo-blr", "--attack", "fgsm", "--n", "4",
                 "--results-dir", str(tmp_path / "results"))
    assert proc.returncode == 2, proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("bench: error:")]
    assert len(error) == 1, proc.stderr
    assert "did you mean 'demo-blur'" in error[0]
    assert "demo-quantize" in error[0] and "broken-defense" in error[0]
    assert not (tmp_path / "results" / "records").exists()


def test_run_evaluates_plugin_defenses_attack_and_model(bench, tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = bench("run", "--dataset", "digits", "--model", "demo-mlp", "--defense", "demo-blur,demo-quantize",
                 "--attack", "fgsm,demo-random-sign", "--n", "20", "--results-dir", str(results), "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "broken-defense" in proc.stderr  # reported up front, and the run went on without it
    records = [json.loads(p.read_text()) for p in sorted((results / "records" / "digits").glob("*.json"))]
    cells = {(r["config"]["defense"], r["config"]["attack"]): r for r in records}
    assert set(cells) == {(d, a) for d in ("demo-blur", "demo-quantize") for a in ("fgsm", "demo-random-sign")}
    blur = cells[("demo-blur", "fgsm")]
    assert blur["config"]["model"] == "demo-mlp" and blur["config"]["n"] == 20
    assert blur["defense"] == {"traits": "purifies, differentiable", "options": {"kernel": 3}, "eval_draws": 1}
    assert cells[("demo-quantize", "fgsm")]["defense"]["options"] == {"levels": 8}
    assert cells[("demo-blur", "demo-random-sign")]["attack"]["implementation"] == "bench-plugin-demo"
    for record in records:
        assert len(record["outcomes"]["clean_correct"]) == 20


# ---------------------------------------------------------------------------------------------------------------------
# in process: fresh registries
# ---------------------------------------------------------------------------------------------------------------------
def _factory(name: str) -> type:
    return type(name.replace("-", "_").title(), (), {"name": ""})


def make_registry(*names: str, what: str = "attack", origin: str = "defensebench 0.1.0") -> Registry:
    registry = Registry(what, "bench.test-group-with-no-entry-points")
    for name in names:
        registry.add(name, _factory(name), origin)
    return registry


ATTACK_NAMES = ("fgsm", "bim", "lbfgs", "pgd", "pgd10", "pgd2", "deepfool")


@pytest.fixture
def attacks() -> Registry:
    return make_registry(*ATTACK_NAMES)


def test_duplicate_name_is_an_error_naming_both_origins() -> None:
    registry = make_registry("none", what="defense")
    first = registry.get("none").factory
    registry.add("none", first, "defensebench 0.1.0")  # the same factory again (a re-import) is harmless
    with pytest.raises(BenchError) as err:
        registry.add("none", _factory("none"), "bench-plugin-x 2.0")
    message = str(err.value)
    assert "defense 'none'" in message and "defensebench 0.1.0" in message and "bench-plugin-x 2.0" in message
    assert registry.get("none").factory is first and registry.get("none").origin == "defensebench 0.1.0"


@pytest.mark.parametrize("bad", ["PGD", "pgd+blur", "fgsm,bim", "", "-fgsm", "pgd 10"])
def test_names_that_the_command_line_could_not_spell_are_rejected(bad: str) -> None:
    with pytest.raises(BenchError, match="names are lower case"):
        make_registry().add(bad, _factory("x"), "test 1.0")


def test_registration_tells_a_class_its_name() -> None:
    registry = make_registry("pgd2")
    assert registry.get("pgd2").factory.name == "pgd2"


def test_unknown_name_gives_close_matches_and_the_valid_names_in_one_line(attacks: Registry) -> None:
    with pytest.raises(BenchError) as err:
        attacks.get("fgms")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("unknown attack 'fgms'; ")
    assert "did you mean 'fgsm'" in message
    assert message.endswith("valid attacks: bim, deepfool, fgsm, lbfgs, pgd, pgd2, pgd10")


def test_unknown_name_without_close_matches_still_lists_the_valid_names(attacks: Registry) -> None:
    message = str(pytest.raises(BenchError, attacks.get, "zzz").value)
    assert "did you mean" not in message and "valid attacks: bim, deepfool" in message


def test_names_sort_naturally(attacks: Registry) -> None:
    assert attacks.names() == ["bim", "deepfool", "fgsm", "lbfgs", "pgd", "pgd2", "pgd10"]
    assert sorted(["pgd10", "pgd2", "pgd"], key=natural_key) == ["pgd", "pgd2", "pgd10"]


@pytest.mark.parametrize("spec, expected", [
    ("all", ["bim", "deepfool", "fgsm", "lbfgs", "pgd", "pgd2", "pgd10"]),
    ("fgsm,bim", ["fgsm", "bim"]),  # the order written
    (" fgsm , bim ,", ["fgsm", "bim"]),
    (["fgsm", "bim"], ["fgsm", "bim"]),
    ("all,-lbfgs", ["bim", "deepfool", "fgsm", "pgd", "pgd2", "pgd10"]),
    ("pgd*", ["pgd", "pgd2", "pgd10"]),
    ("pgd?", ["pgd2"]),
    ("all,-pgd*,-deepfool", ["bim", "fgsm", "lbfgs"]),
    ("fgsm,all", ["fgsm", "bim", "deepfool", "lbfgs", "pgd", "pgd2", "pgd10"]),  # no duplicates, first place kept
    ("fgsm,fgsm", ["fgsm"]),
])
def test_select(attacks: Registry, spec: Any, expected: list[str]) -> None:
    assert attacks.select(spec) == expected


@pytest.mark.parametrize("spec", ["", " ", ",", " , ", []])
def test_empty_selection_is_an_error(attacks: Registry, spec: Any) -> None:
    with pytest.raises(BenchError, match="empty attack selection"):
        attacks.select(spec)


@pytest.mark.parametrize("spec, match", [
    ("fgsm,-fgsm", "leaves nothing to run"),
    ("cw*", r"pattern 'cw\*' matches nothing; valid attacks: bim, deepfool"),
    ("fgsm,bmi", "unknown attack 'bmi'; did you mean 'bim'"),
    ("all,-bmi", "unknown attack 'bmi'"),
])
def test_bad_selections_say_what_is_valid(attacks: Registry, spec: str, match: str) -> None:
    with pytest.raises(BenchError, match=match):
        attacks.select(spec)


def test_a_group_selects_its_members_and_a_name_wins_over_a_group() -> None:
    registry = make_registry("fgsm", "bim", "square")
    registry.get("fgsm").factory.groups = ("paper",)
    registry.get("bim").factory.groups = ("paper", "iterative")
    assert registry.groups() == ["iterative", "paper"]
    assert registry.select("paper") == ["bim", "fgsm"]
    assert registry.select("all,-paper") == ["square"]
    registry.add("iterative", _factory("iterative"), "test 1.0")
    assert registry.select("iterative") == ["iterative"]
    message = str(pytest.raises(BenchError, registry.select, "papr").value)
    assert "did you mean 'paper'" in message and message.endswith("; groups: iterative, paper")


def test_the_paper_group_is_the_thirteen_attacks_of_the_paper_and_its_reproduction() -> None:
    from benchmark.core.registry import ATTACKS

    assert set(ATTACKS.select("paper")) == {
        "fgsm", "fgm", "bim", "pgd", "cw-linf", "cw", "deepfool", "lbfgs", "saliency-map", "gaussian-blur",
        "contrast-reduction", "uniform-noise", "salt-and-pepper"}


# -- entry points, from a fake distribution put on sys.path -----------------------------------------------------------
FAKE_GROUP = "bench.test-defenses"
FAKE_MODULES = {
    # the registry's own definitions, as a built-in module would make them
    "fakeplug_builtin": """
        import fakeplug_registry

        @fakeplug_registry.REGISTRY.register("none")
        class NoDefense:
            name = ""
        """,
    # module form: importing it runs the decorator
    "fakeplug_decorated": """
        import fakeplug_registry

        @fakeplug_registry.REGISTRY.register("fake-blur")
        class Blur:
            name = ""
        """,
    # factory form: a class that is not decorated
    "fakeplug_factory": """
        class Quantize:
            name = ""

        class ShadowNone:
            name = ""
        """,
    # a decorated class that claims a built-in name
    "fakeplug_shadow": """
        import fakeplug_registry

        @fakeplug_registry.REGISTRY.register("none")
        class ShadowNone:
            name = ""
        """,
    "fakeplug_broken": """
        raise ImportError("fakeplug_broken needs frobnicate, which is not installed")
        """,
}
FAKE_ENTRY_POINTS = {
    "fake-blur": "fakeplug_decorated",
    "fake-quantize": "fakeplug_factory:Quantize",
    "fake-broken": "fakeplug_broken",
    "none": "fakeplug_factory:ShadowNone",
    "shadow": "fakeplug_shadow",
}


@pytest.fixture
def fake_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    """A fresh defense registry whose entry-point group is served by ``fakeplug 1.0``, installed on sys.path."""
    registry = Registry("defense", FAKE_GROUP, ("fakeplug_builtin",))
    holder = types.ModuleType("fakeplug_registry")
    holder.REGISTRY = registry  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fakeplug_registry", holder)
    for module, source in FAKE_MODULES.items():
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    dist_info = tmp_path / "fakeplug-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 1.0\n")
    lines = [f"[{FAKE_GROUP}]", *(f"{name} = {value}" for name, value in FAKE_ENTRY_POINTS.items())]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("BENCH_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    yield registry
    for module in FAKE_MODULES:
        sys.modules.pop(module, None)


def test_entry_points_load_lazily_with_their_distribution_as_origin(fake_plugin: Registry) -> None:
    assert "fakeplug_decorated" not in sys.modules  # nothing is imported before the first look-up
    assert fake_plugin.names() == ["fake-blur", "fake-quantize", "none"]
    assert fake_plugin.get("fake-blur").origin == "fakeplug 1.0"  # module form: the decorator's entry
    quantize = fake_plugin.get("fake-quantize")
    assert quantize.origin == "fakeplug 1.0" and quantize.factory.__name__ == "Quantize"  # factory form
    assert quantize.factory.name == "fake-quantize"
    assert fake_plugin.get("none").origin.startswith("defensebench ")
    assert fake_plugin.get("none").factory.__module__ == "fakeplug_builtin"


def test_a_broken_entry_point_is_remembered_by_name(fake_plugin: Registry) -> None:
    fake_plugin.names()
    assert sorted(fake_plugin.broken) == ["fake-broken", "none", "shadow"]
    assert fake_plugin.broken["fake-broken"] == (
        "fakeplug 1.0: ImportError: fakeplug_broken needs frobnicate, which is not installed")
    message = str(pytest.raises(BenchError, fake_plugin.get, "fake-blr").value)
    assert "did you mean 'fake-blur'" in message
    assert message.endswith("(plugins that failed to load: fake-broken, none, shadow)")


@pytest.mark.parametrize("entry_point", ["none", "shadow"])  # factory form; module form with a decorator
def test_an_entry_point_claiming_a_builtin_name_names_both_origins(fake_plugin: Registry, entry_point: str) -> None:
    fake_plugin.names()
    why = fake_plugin.broken[entry_point]
    assert "defense 'none' is registered twice" in why
    assert "by defensebench " in why and "by fakeplug 1.0" in why


def test_autoload_switch_skips_entry_points(fake_plugin: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert fake_plugin.names() == ["none"]  # built-in modules still load
    assert fake_plugin.broken == {}
    assert not any(m in sys.modules for m in ("fakeplug_decorated", "fakeplug_factory", "fakeplug_broken"))
