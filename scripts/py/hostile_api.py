#!/usr/bin/env python3
"""A hostile stand-in for the exporter's JSON API, for measuring
`explain --from` (BENCHMARKS.md, "explain --from").

usage: hostile_api.py PORT MODE
  huge   375 MB of map objects, no Content-Length (read until the cap)
  dense  a valid document just under 16 MiB: one map with 8.3 million
         small numbers (the most JSON values per byte)
  empty  {}
  v9     a document of schema_version 9
"""
import http.server
import sys

MODE = sys.argv[2]
DENSE = b'{"schema_version":4,"total":1,"maps":[{"id":1,"x":[' + b"0," * 8_300_000 + b"0]}]}"


class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if MODE == "huge":
            self.end_headers()
            item = b'{"id":1,"name":"' + b"x" * 53 + b'"},'
            try:
                self.wfile.write(b'{"schema_version":4,"maps":[')
                for _ in range(5000):
                    self.wfile.write(item * 1000)
            except OSError:
                pass
            return
        body = {"dense": DENSE, "empty": b"{}", "v9": b'{"schema_version":9,"maps":[]}'}[MODE]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
