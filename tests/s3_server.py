"""moto's S3 API server on 127.0.0.1, serving one request at a time.

Run as ``python tests/s3_server.py PORT``. moto's own ``moto_server`` is threaded, so its
conditional PUT (check the ETag, then store) can interleave with another; served one at a
time it is atomic, as S3's is, and a race between two writers is decided by the server.
"""

from __future__ import annotations

import sys

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

if __name__ == "__main__":
    app = DomainDispatcherApplication(create_backend_app)
    run_simple("127.0.0.1", int(sys.argv[1]), app, threaded=False,
               request_handler=MotoRequestHandler)  # fmt: skip
