"""flawscope.audit."""
