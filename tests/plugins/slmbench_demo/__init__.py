"""A third-party plugin package for slmbench, installed by tests/test_plugins.py through entry points only: one
backend, one device adapter and one scenario, each one file. slmbench itself is not edited to know them."""
