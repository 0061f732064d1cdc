"""flawscope.decide."""
