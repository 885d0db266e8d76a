# The package version: must equal GRULITE_VERSION_STRING in include/grulite.h
# (tests/test_version.py checks it); pyproject.toml reads it from here.
__version__ = "0.1.0"
