"""Helpers for the multi-process trainer tests (run by torchrun, imported by the tests)."""
