"""The undefended classifier: the baseline every defense is compared with."""
from benchmark.core.defense import Defense
from benchmark.core.registry import register_defense


@register_defense("none")
class NoDefense(Defense):
    summary = "no defense: the classifier as trained normally"
