"""The undefended classifier: the baseline every defense is compared with."""
from benchmark.defense import Defense
from benchmark.registry import register_defense


@register_defense("none")
class NoDefense(Defense):
    summary = "no defense: the classifier as trained normally"
