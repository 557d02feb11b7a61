#!/usr/bin/python3
"""mock_nodelay.py: test/mock_api.py, with TCP_NODELAY on its connections.

http.server sends a response's head and body in two writes; on a reused
(keep-alive) connection Nagle's algorithm then holds the body until the
client's delayed ACK, about 40 ms on Linux loopback.  test/bench's polling
figure scales time by 60, which would turn that into seconds, so it runs
the mock through this wrapper.

Usage: mock_nodelay.py PATH/TO/mock_api.py [mock_api.py's arguments]
"""
import importlib.util
import sys

spec = importlib.util.spec_from_file_location("mock_api", sys.argv[1])
mock_api = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mock_api)
mock_api.Handler.disable_nagle_algorithm = True
sys.exit(mock_api.main(sys.argv[2:]))
