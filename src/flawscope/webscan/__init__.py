"""flawscope.webscan: inspecting continuous webs seen by a line-scan camera.

Rows come from a line-scan source (:mod:`flawscope.acquire.rows`: ``websim://``, ``webstrip://``,
``gigeline://``), assembled into overlapping frames; :class:`WebScan` judges the frames, merges
defects across frame boundaries and reports them in web coordinates (metres along, mm across),
with a roll summary (:mod:`flawscope.webscan.summary`) and a defect map (:mod:`flawscope.webscan.report`).
"""

from flawscope.webscan.merge import DefectMerger
from flawscope.webscan.records import RollSummary, WebDefect, WebStretch
from flawscope.webscan.scan import ScanResult, WebScan

__all__ = ["DefectMerger", "RollSummary", "ScanResult", "WebDefect", "WebScan", "WebStretch"]
