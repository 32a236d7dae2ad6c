"""The ingest listener's protective limits (spec §8): a request that does not arrive in full
within read_timeout is dropped and stores nothing; connections beyond max_connections are
turned away with 503; an idle kept-alive connection is closed after idle_timeout."""

import socket
import time
import unittest

from harness import TOKEN, DaemonTestCase, connection, repeater, unique_form


def open_socket(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.settimeout(10)
    return s


def read_all(s: socket.socket) -> bytes:
    """Reads until the server closes the connection."""
    chunks = []
    while True:
        data = s.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


class ListenerLimitsTest(DaemonTestCase):

    def test_slow_request_is_dropped_after_read_timeout_and_nothing_stored(self):
        ep = self.endpoint()
        d = self.daemon([connection("inbox", ep.url())], [repeater("forms", "inbox")],
                        listen={"read_timeout": "500ms", "idle_timeout": "5s"})
        _, form = unique_form()
        head = (f"POST /a/demo/receiver HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Type: text/xml\r\nContent-Length: {len(form)}\r\n\r\n").encode()
        s = open_socket(d.port)
        t0 = time.monotonic()
        s.sendall(head + form[:100])          # the rest never comes
        answer = read_all(s)
        waited = time.monotonic() - t0
        s.close()
        self.assertEqual(answer, b"", "a request cut short gets no answer, only a closed connection")
        self.assertGreaterEqual(waited, 0.4)
        self.assertLess(waited, 5.0, "the connection must be closed about read_timeout later")
        self.assertEqual(d.db.counts()[:2], (0, 0))
        # The listener is still serving others.
        self.assertEqual(d.submit(unique_form()[1]).status, 201)

    def test_connections_beyond_max_connections_get_503(self):
        ep = self.endpoint()
        d = self.daemon([connection("inbox", ep.url())], [repeater("forms", "inbox")],
                        listen={"max_connections": 2, "idle_timeout": "30s", "read_timeout": "30s"})
        held = [open_socket(d.port), open_socket(d.port)]
        time.sleep(0.2)   # let the daemon accept both
        extra = open_socket(d.port)
        answer = read_all(extra)
        extra.close()
        self.assertTrue(answer.startswith(b"HTTP/1.1 503"), answer[:200])
        self.assertIn(b"too many connections", answer)
        for s in held:
            s.close()
        # Once they are gone, submissions are served again.
        deadline = time.monotonic() + 5
        while True:
            status = d.submit(unique_form()[1]).status
            if status == 201 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(status, 201)

    def test_idle_keep_alive_connection_is_closed_after_idle_timeout(self):
        ep = self.endpoint()
        d = self.daemon([connection("inbox", ep.url())], [repeater("forms", "inbox")],
                        listen={"idle_timeout": "300ms", "read_timeout": "10s"})
        _, form = unique_form()
        s = open_socket(d.port)
        s.sendall((f"POST /a/demo/receiver HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                   f"Content-Type: text/xml\r\nContent-Length: {len(form)}\r\n\r\n").encode() + form)
        t0 = time.monotonic()
        answer = read_all(s)   # the 201, then the close once the connection sat idle
        waited = time.monotonic() - t0
        s.close()
        self.assertTrue(answer.startswith(b"HTTP/1.1 201"), answer[:200])
        self.assertGreaterEqual(waited, 0.25)
        self.assertLess(waited, 5.0)


if __name__ == "__main__":
    unittest.main()
