"""A decorated defense that claims the built-in name ``none``: importing this module must fail."""
from benchmark import Defense, register_defense


@register_defense("none")
class ShadowRegisteredNone(Defense):
    summary = "would shadow the built-in baseline"
