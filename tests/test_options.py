"""Options of defenses and attacks in a selection: parsing, canonical spelling, record ids, aliases, bad forms."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmark.cli import main
from benchmark.core.defense import build_defense
from benchmark.core.errors import BenchError
from benchmark.core.options import parse_item, split_top
from benchmark.core.registry import ATTACKS, DEFENSES
from benchmark.engine.grid import RunPlan, cell_config
from benchmark.store import records

pytestmark = pytest.mark.usefixtures("restore_cli_state")


def test_items_split_outside_parentheses():
    assert split_top("pgd(steps=2,restarts=3),fgsm", ",") == ["pgd(steps=2,restarts=3)", "fgsm"]
    assert split_top("jpeg(quality=50)+pixeldefend(eps_defend=16/255)", "+") == [
        "jpeg(quality=50)", "pixeldefend(eps_defend=16/255)"]
    assert parse_item("pgd( steps = 200 , rel_stepsize=0.01 )") == ("pgd", {"steps": "200", "rel_stepsize": "0.01"})
    assert parse_item("fgsm") == ("fgsm", {})


def test_canonical_spelling_drops_defaults_and_orders_options():
    assert DEFENSES.configure("jpeg(quality=75)").spec == "jpeg"  # 75 is the default: the same defense
    assert DEFENSES.configure("jpeg(quality=50)").spec == "jpeg(quality=50)"
    assert DEFENSES.configure("pixeldefend(eps_defend=0.0627450980392157)").spec == \
        "pixeldefend(eps_defend=16/255)"
    assert DEFENSES.select("jpeg(quality=50)+feature-squeezing,none") == ["jpeg(quality=50)+feature-squeezing",
                                                                           "none"]
    assert ATTACKS.select("pgd(steps=200),fgsm") == ["pgd(steps=200)", "fgsm"]


def test_options_reach_the_constructor_and_the_record():
    jpeg = build_defense("jpeg(quality=50)")
    assert jpeg.quality == 50 and jpeg.options()["quality"] == 50 and jpeg.name == "jpeg(quality=50)"
    pgd = ATTACKS.build("pgd(steps=7)")
    assert pgd.options()["steps"] == 7


def ids(defense: str, attack: str = "fgsm") -> str:
    plan = RunPlan(dataset="digits", defenses=(defense,), attacks=(attack,))
    return records.record_id(cell_config(plan, defense, attack, (8 / 255,), 10))


def test_record_ids_differ_by_option_and_aliases_keep_theirs():
    assert ids(DEFENSES.configure("jpeg(quality=50)").spec) != ids(DEFENSES.configure("jpeg(quality=20)").spec)
    assert ids(DEFENSES.configure("jpeg(quality=75)").spec) == ids("jpeg")
    assert ids("none", ATTACKS.configure("pgd(steps=200)").spec) != ids("none", "pgd")
    # the variant names are option settings, spelled as before so that committed records keep their ids
    assert DEFENSES.configure("pixeldefend(adaptive=image)").spec == "adaptive-pixeldefend"
    assert DEFENSES.configure("pixeldefend(adaptive=pixel)").spec == "adaptive-pixeldefend-pixel"
    assert DEFENSES.configure("adaptive-pixeldefend(alpha=0.01)").spec == "adaptive-pixeldefend(alpha=0.01)"
    assert build_defense("pixeldefend(adaptive=image)").adaptive == "image"


@pytest.mark.parametrize("selection, words", [
    ("jpeg(qualty=50)", ["no option 'qualty'", "quality (int in [1, 100])"]),
    ("jpeg(quality=0)", ["quality of jpeg must be int in [1, 100], not 0"]),
    ("jpeg(quality=fifty)", ["quality of jpeg must be int in [1, 100]"]),
    ("jpeg(quality=5.5)", ["must be int"]),
    ("jpeg(quality=50", ["unbalanced '('"]),
    ("jpeg(quality)", ["malformed option 'quality'", "key=value"]),
    ("jpeg(quality=50,quality=60)", ["given twice"]),
    ("pixeldefend(adaptive=sometimes)", ["one of image, pixel"]),
])
def test_bad_option_is_one_line_and_exit_2(selection, words, tmp_path):
    result = CliRunner().invoke(main, ["run", "--dataset", "digits", "--defense", selection, "--attack", "fgsm",
                                       "--n", "5", "--results-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bench: error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not list(Path(tmp_path).rglob("*.json"))


def test_bad_attack_option_is_refused_before_any_work():
    with pytest.raises(BenchError, match="pgd has no option 'stpes'"):
        ATTACKS.select("pgd(stpes=3)")


def test_list_options_shows_declarations():
    result = CliRunner().invoke(main, ["list", "defenses", "--options"])
    assert result.exit_code == 0, result.output
    assert "quality" in result.output and "eps_defend" in result.output
    result = CliRunner().invoke(main, ["list", "attacks", "--options"])
    assert "steps" in result.output


def test_training_length_is_an_option_that_keys_the_classifier():
    from benchmark.data.dataset import load_dataset
    from benchmark.training.zoo import classifier_spec, train_config

    digits = load_dataset("digits")
    plain, longer = build_defense("adv-fgsm"), build_defense("adv-fgsm(epochs=40)")
    assert train_config(digits, plain).epochs == 15 and train_config(digits, longer).epochs == 40
    # unset, the option is absent from the store key and the record, so classifiers trained before it keep theirs
    assert "epochs" not in plain.training_config(digits) and "epochs" not in plain.options()
    assert classifier_spec(digits, "resnet", plain, 0) != classifier_spec(digits, "resnet", longer, 0)
    assert longer.options()["epochs"] == 40
    assert ids("adv-fgsm(epochs=40)") != ids("adv-fgsm")
    assert DEFENSES.select("label-smoothing(epochs=5)+feature-squeezing") == [
        "label-smoothing(epochs=5)+feature-squeezing"]
    with pytest.raises(BenchError, match="epochs of adv-bim must be int in"):
        DEFENSES.configure("adv-bim(epochs=2.5)")
