"""A real Redis server for the campaign tests (Debian's ``redis-server``, which ``.ci/run``
installs), on a free loopback port, with nothing saved to disk."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

# .ci/run sets this: in CI a missing server is a failure, not a skip
REQUIRED = os.environ.get("LORA_TEST_REDIS") == "required"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """``redis://127.0.0.1:PORT`` of a server started for this session (db numbers free)."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    pytest.importorskip("redis")
    import redis

    port = _free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None:
                pytest.fail(f"redis-server exited with {proc.returncode}")
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not answer within 5 s")
    yield url
    proc.terminate()
    proc.wait(timeout=10)
