"""The 2020 design, rebuilt from its description as a baseline for viewcast's benchmarks.

A `tail | post` pipe POSTs every changed row of a view, as JSON, to /api/v1/update/<view>; the
handler broadcasts the body to every WebSocket open on /api/v1/stream/<view>. A new client gets
only later changes (there is no snapshot). One process, one thread, Tornado's IOLoop.

Usage: server.py --port P  (0 = any free port; prints "listening 127.0.0.1:P" when ready).
Loopback only.
"""

import argparse
import collections
import sys

import tornado.ioloop
import tornado.web
import tornado.websocket

SOCKETS = collections.defaultdict(set)


class Stream(tornado.websocket.WebSocketHandler):
    def check_origin(self, origin):
        return True

    def open(self, view):
        self.view = view
        SOCKETS[view].add(self)

    def on_close(self):
        SOCKETS[self.view].discard(self)

    def on_message(self, message):
        pass


class Update(tornado.web.RequestHandler):
    def post(self, view):
        body = self.request.body
        for sock in list(SOCKETS[view]):
            try:
                sock.write_message(body)
            except tornado.websocket.WebSocketClosedError:
                SOCKETS[view].discard(sock)
        self.set_status(204)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    app = tornado.web.Application(
        [(r"/api/v1/stream/([^/]+)", Stream), (r"/api/v1/update/([^/]+)", Update)]
    )
    sockets = tornado.netutil.bind_sockets(args.port, address="127.0.0.1", backlog=4096)
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    print(f"listening 127.0.0.1:{port}", flush=True)
    sys.stdout.flush()
    tornado.ioloop.IOLoop.current().start()


if __name__ == "__main__":
    import tornado.httpserver
    import tornado.netutil

    main()
