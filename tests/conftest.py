import compat  # noqa: F401  # the compatibility layer goes first, as in every entry point
