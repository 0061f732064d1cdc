"""flawscope.web: the operators' web app (dashboard, review queue, REST API) beside the line.

``flawscope serve`` runs it standalone; a station starts it with :func:`start_server`.
"""

from flawscope.web.config import WebConfig
from flawscope.web.server import RunningServer, serve, start_server

__all__ = ["RunningServer", "WebConfig", "serve", "start_server"]
