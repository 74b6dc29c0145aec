"""The Python way in: :func:`evaluate` a model, defenses and attacks, and read the :class:`Results`.

``bench run`` is a client of the same function (:mod:`benchmark.cli.run`)."""
