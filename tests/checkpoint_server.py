"""Test helpers: a local HTTP server for checkpoints and a random checkpoint in the authors' layout."""
import http.server
import threading
import time
from pathlib import Path

import torch

from a2mamba_core import create_model


class CheckpointServer:
    """Serves the files of ``root`` on 127.0.0.1 from a daemon thread and records the path of
    every GET request; ``delay`` seconds pass before each response."""

    def __init__(self, root: Path, delay: float = 0.0):
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            timeout = 10  # seconds a connection may stall before the server drops it

            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):
                server.requests.append(self.path)
                time.sleep(delay)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.requests = []
        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/'
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def official_checkpoint(name: str = 'a2mamba_n') -> torch.nn.Module:
    """A model whose state_dict stands in for a released file: random, with the official names."""
    model = create_model(name)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()
