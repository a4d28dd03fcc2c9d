from hypothesis import settings

import compat

# Every process of the project's venv has the compatibility fixes, from the .pth file that
# `make install` puts in its site-packages (compat/__init__.py); the tests rely on it.
assert compat.hooks.installed(), "compat is not active in this interpreter: run `make install`"

# Fuzzing (tests/test_fuzz.py): a bounded pass in every run, a long one with `make fuzz`.
settings.register_profile("default", max_examples=300, deadline=None)
settings.register_profile("fuzz", max_examples=20_000, deadline=None)
settings.load_profile("default")
