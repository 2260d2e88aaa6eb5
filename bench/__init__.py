"""Benchmarks of favmigrate against a disposable PostgreSQL (scripts, not tests)."""
