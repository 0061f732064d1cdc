"""flawscope.evaluate."""
