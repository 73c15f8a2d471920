"""Embedded on-disk stores for state too large for memory (the shell side of the core's
store protocols)."""
