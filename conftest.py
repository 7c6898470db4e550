"""Puts the repository root on sys.path so that tests can import `configs`."""
