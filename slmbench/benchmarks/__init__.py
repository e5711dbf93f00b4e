"""Benchmarks of slmbench itself (commands that print figures; never timed assertions in tests)."""
