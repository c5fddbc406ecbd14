"""The loopback HTTP server the test doubles share: ``ThreadingHTTPServer`` that does not print a
traceback when a client gives up on a connection (the fault-injection tests drop connections
on purpose, and a reset connection is no error of the server's)."""

from __future__ import annotations

import sys
from http.server import ThreadingHTTPServer
from typing import Any


class QuietHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)  # a client that gave up is no error
