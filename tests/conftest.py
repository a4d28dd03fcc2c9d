import compat

# Every process of the project's venv has the compatibility fixes, from the .pth file that
# `make install` puts in its site-packages (compat/__init__.py); the tests rely on it.
assert compat.hooks.installed(), "compat is not active in this interpreter: run `make install`"
