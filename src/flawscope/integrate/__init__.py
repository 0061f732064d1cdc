"""flawscope.integrate."""
