"""A real deployment on 127.0.0.1: hub (SuperLink) + two sites (SuperNodes) as processes, TLS, site auth."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.cli import main

TESTS = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def fedsite(*args: str, env: dict, log: Path | None = None, background: bool = False):
    cmd = [sys.executable, "-m", "common.cli", *args]
    if background:
        return subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def stop(process: subprocess.Popen) -> None:
    """Stop a process and everything it started (each runs in its own session)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
    else:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_certs_make_writes_a_ca_a_hub_certificate_and_site_keys(tmp_path):
    from cryptography import x509

    assert main(["certs", "make", "--out", str(tmp_path), "--host", "127.0.0.1", "--site", "a", "--site", "b"]) == 0
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    for name in ("a", "b"):
        assert (tmp_path / "sites" / f"{name}.pub").read_text().startswith("ecdsa-sha2-nistp384 ")
        assert oct((tmp_path / "sites" / f"{name}.key").stat().st_mode & 0o777) == "0o600"


def test_hub_and_site_refuse_missing_files_with_exit_2(tmp_path):
    assert main(["hub", "start", "--certs", str(tmp_path / "nope"), "--state", str(tmp_path / "h")]) == 2
    args = ["site", "start", "--data", str(tmp_path), "--ca", str(tmp_path / "ca.crt"), "--key", str(tmp_path / "k")]
    assert main([*args, "--state", str(tmp_path / "s")]) == 2


@pytest.mark.slow
def test_hub_two_sites_two_rounds_and_an_unregistered_site_is_refused(tmp_path, reference_registered):
    home = tmp_path / "flwr_home"
    env = dict(
        os.environ, FLWR_HOME=str(home), PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    )
    env.update(FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1", FEDSITE_THREADS="1")
    certs = tmp_path / "certs"
    assert main(["certs", "make", "--out", str(certs), "--site", "site-0", "--site", "site-1", "--site", "rogue"]) == 0
    for k in range(2):
        reference_registered.synthesize(tmp_path / "data" / f"site-{k}", seed=0, site=k, n_sites=2, scale="tiny")
    port = free_port()
    processes = []
    try:
        hub = fedsite("hub", "start", "--certs", str(certs), "--port", str(port), "--state", str(home),
                      env=env, log=tmp_path / "hub.log", background=True)  # fmt: skip
        processes.append(hub)
        wait_for_port(port)
        for k in range(2):
            done = fedsite("hub", "register", str(certs / "sites" / f"site-{k}.pub"), "--state", str(home), env=env)
            assert done.returncode == 0, done.stderr
        common = ["--hub", f"127.0.0.1:{port}", "--ca", str(certs / "ca.crt"), "--state", str(home)]
        for k in range(2):
            site = fedsite("site", "start", "--data", str(tmp_path / "data" / f"site-{k}"), "--name", f"site-{k}",
                           "--key", str(certs / "sites" / f"site-{k}.key"), "--port", str(free_port()), *common,
                           env=env, log=tmp_path / f"site-{k}.log", background=True)  # fmt: skip
            processes.append(site)
        rogue = fedsite("site", "start", "--data", str(tmp_path / "data" / "site-0"), "--name", "rogue",
                        "--key", str(certs / "sites" / "rogue.key"), "--port", str(free_port()), "--retries", "1",
                        *common, env=env, log=tmp_path / "rogue.log", background=True)  # fmt: skip
        processes.append(rogue)
        out = tmp_path / "run"
        done = fedsite("hub", "run", "--vertical", "reference", "--task-module", "reference_task", "--tiny",
                       "--sites", "2", "--rounds", "2", "--out", str(out), "--state", str(home), env=env)  # fmt: skip
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        history = json.loads((out / "history.json").read_text())
        assert history["sites"] == ["site-0", "site-1"]
        assert len(history["rounds"]) == 2
        for record in history["rounds"]:
            assert all(record["sites"][s]["status"] == "ok" for s in ("site-0", "site-1"))
            assert record["sites"]["site-0"]["bytes_sent"] > 0
        assert (out / "global_model" / "model.pt").exists()
        # the unregistered site was turned away and gave up; the registered ones are still serving
        assert rogue.wait(timeout=60) != 0
        assert "Failed to activate SuperNode" in (tmp_path / "rogue.log").read_text()
        assert all(p.poll() is None for p in processes[:3])
    finally:
        for process in processes:
            stop(process)
    assert all(p.poll() is not None for p in processes)
