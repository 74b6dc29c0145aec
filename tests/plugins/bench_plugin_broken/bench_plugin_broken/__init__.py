"""DefenseBench plugins that fail to load (see pyproject.toml)."""
