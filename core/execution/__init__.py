"""Execution: runs approved automatable outputs through their skill's executor."""
