"""Needs a package that is not installed: importing this module raises ImportError (ModuleNotFoundError)."""
import bench_plugin_broken_dependency_that_is_not_installed  # noqa: F401

Nothing = None
