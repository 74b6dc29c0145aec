"""An undecorated defense whose entry point is named ``none``, a built-in's name: registering it must fail."""
from benchmark import Defense


class ShadowNone(Defense):
    summary = "would shadow the built-in baseline"
