"""``line-server``: every line a TCP client sends is a job; the reply is written back as one line,
in the order of the lines (their jobs may run on different workers and finish in any order)."""

import socket
from collections import deque

from cocaine.core.plugin_api import Driver, get_int, hookimpl, only_keys


class LineServer(Driver):
    name = "line-server"

    @classmethod
    def validate(cls, config, where):
        only_keys(config, ("type", "port"), where)
        return {"type": cls.name, "port": get_int(config, "port", where, minimum=1, maximum=65535)}

    def start(self):
        self.listener = socket.create_server(("127.0.0.1", self.config["port"]))
        self.listener.setblocking(False)
        self.clients = {}
        self.context.reactor.add_reader(self.listener.fileno(), self._accept)

    def _accept(self):
        conn, _ = self.listener.accept()
        conn.setblocking(True)  # replies are tiny; a test client reads them at once
        self.clients[conn.fileno()] = (conn, bytearray(), deque())
        self.context.reactor.add_reader(conn.fileno(), lambda: self._read(conn))

    def _read(self, conn):
        data = conn.recv(65536)
        if not data:
            self.context.reactor.remove_reader(conn.fileno())
            self.clients.pop(conn.fileno(), None)
            conn.close()
            return
        _, buffer, waiting = self.clients[conn.fileno()]
        buffer += data
        while b"\n" in buffer:
            line, _, rest = bytes(buffer).partition(b"\n")
            buffer[:] = rest
            reply = LineReply(conn, waiting)
            waiting.append(reply)
            self.context.submit(line, reply)

    def stop(self):
        self.context.reactor.remove_reader(self.listener.fileno())
        self.listener.close()
        for fd, (conn, _, _) in self.clients.items():
            self.context.reactor.remove_reader(fd)
            conn.close()


class LineReply:
    """The answer to one line. It is written once every line before it on its connection has been
    answered: ``waiting`` holds the connection's unwritten replies, in the order of their lines."""

    def __init__(self, conn, waiting):
        self.conn = conn
        self.waiting = waiting
        self.chunks = []
        self.line = None  # the whole answer, once the job is done

    def chunk(self, data):
        self.chunks.append(data)

    def end(self):
        self._done(b"".join(self.chunks) + b"\n")

    def error(self, code, message):
        self._done(f"ERROR {code} {message}\n".encode())

    def _done(self, line):
        self.line = line
        waiting = self.waiting
        while waiting and waiting[0].line is not None:
            self.conn.sendall(waiting.popleft().line)


@hookimpl
def cocaine_register_drivers():
    return [LineServer]
