"""flawscope.improve: from operator feedback to a better model, proven on the plant's own parts.

Retraining with lineage (:mod:`~flawscope.improve.retrain`), the station's model registry with
audited promotion and rollback (:mod:`~flawscope.improve.registry`), comparison with intervals and
gates (:mod:`~flawscope.improve.compare`), and shadow evaluation on the line
(:mod:`~flawscope.improve.shadow`).
"""
