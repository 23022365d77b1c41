"""An in-process HTTP object server for the tests: lab.objects_server.ObjectServer served from a thread."""
import http.client
import threading

from lab.objects_server import ObjectServer


class InProcessServer:
    """An ObjectServer on a free port, served from a daemon thread; stop() shuts it down and joins it."""

    def __init__(self, root, **kwargs):
        self.server = ObjectServer(str(root), **kwargs)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def request(self, method, target, body=None, timeout=5):
        """(status, body) of one request on a fresh connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=timeout)
        try:
            conn.request(method, target, body=body)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def stop(self):
        self.server.stop(grace_s=1.0)
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()
