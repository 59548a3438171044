"""``line-server``: every line a TCP client sends is a job; the reply is written back as one line."""

import socket

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
        self.clients[conn.fileno()] = (conn, bytearray())
        self.context.reactor.add_reader(conn.fileno(), lambda: self._read(conn))

    def _read(self, conn):
        data = conn.recv(65536)
        if not data:
            self.context.reactor.remove_reader(conn.fileno())
            self.clients.pop(conn.fileno(), None)
            conn.close()
            return
        buffer = self.clients[conn.fileno()][1]
        buffer += data
        while b"\n" in buffer:
            line, _, rest = bytes(buffer).partition(b"\n")
            buffer[:] = rest
            self.context.submit(line, LineReply(conn))

    def stop(self):
        self.context.reactor.remove_reader(self.listener.fileno())
        self.listener.close()
        for fd, (conn, _) in self.clients.items():
            self.context.reactor.remove_reader(fd)
            conn.close()


class LineReply:
    def __init__(self, conn):
        self.conn = conn
        self.chunks = []

    def chunk(self, data):
        self.chunks.append(data)

    def end(self):
        self.conn.sendall(b"".join(self.chunks) + b"\n")

    def error(self, code, message):
        self.conn.sendall(f"ERROR {code} {message}\n".encode())


@hookimpl
def cocaine_register_drivers():
    return [LineServer]
