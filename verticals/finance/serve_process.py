"""`fedsite finance serve` as a separate process on a free loopback port, until /health answers.

The tests and the latency/throughput benchmarks all need the real server (uvicorn, its own
interpreter, the model loaded from disk) rather than an in-process app: what they check is what a
bank's scoring host runs. One place starts it, waits for it and stops it gracefully (SIGINT, what
Ctrl-C or `systemctl stop` does, so `--state` snapshots are written), killing it only if it hangs.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from common.loopback import free_port, get


@dataclass(frozen=True)
class ServeProcess:
    """A running server: its port, its base URL and the process itself."""

    port: int
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def serving(
    model: Path | str,
    *args: str,
    env: dict[str, str] | None = None,
    startup_s: float = 60.0,
) -> Iterator[ServeProcess]:
    """Start `finance serve --model MODEL ARGS` on 127.0.0.1, yield once /health is 200, then stop it.

    Raises RuntimeError (with the server's last stderr) if it exits or stays silent for `startup_s`."""
    port = free_port()
    cmd = [sys.executable, "-m", "common.cli", "finance", "serve", "--model", str(model), "--port", str(port), *args]
    log = tempfile.TemporaryFile()  # a file, not a pipe: a chatty server never blocks on a full pipe
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + startup_s
        while True:
            try:
                if get(port, "/health", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                log.seek(0)
                said = log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"finance serve exited with code {proc.returncode}: {said}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"finance serve did not answer /health within {startup_s:.0f} s")
            time.sleep(0.1)
        yield ServeProcess(port, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
