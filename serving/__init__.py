"""Serve a pixelport model repository with the real Triton server, embedded or external.

`start_server(ServerSettings(repository=...))` returns a `TritonServer` handle once every model is
ready; `python -m serving start|status|stop|reload` is the command-line face of the same code.
"""

from .errors import ServingError
from .server import TritonServer, start_server
from .settings import ServerSettings, free_ports
from .stats import ModelStatus, collect_status, format_status

__all__ = ["ModelStatus", "ServerSettings", "ServingError", "TritonServer", "collect_status", "format_status",
           "free_ports", "start_server"]
