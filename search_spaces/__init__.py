"""The shipped search spaces (YAML), installed as the package ``igcnas.search_spaces``; see ``igcnas spaces``."""
