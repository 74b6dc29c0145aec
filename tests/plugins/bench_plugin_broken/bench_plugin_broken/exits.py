"""Calls sys.exit() at import, as a careless script-turned-plugin might: the loader must name it and skip it, and the
`bench` command must keep working (and not exit with this module's message)."""
import sys

sys.exit("bench_plugin_broken.exits: this plugin exits at import")
