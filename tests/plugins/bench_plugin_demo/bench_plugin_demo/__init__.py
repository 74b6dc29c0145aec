"""A demo DefenseBench plugin (see pyproject.toml for its entry points). Importing this package registers nothing."""
