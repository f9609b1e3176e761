"""A real deployment: hub (SuperLink behind its Fleet gate) and sites (SuperNodes) as processes, TLS,
site authentication, on loopback and on this machine's own non-loopback address."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import tomli_w

from common.cli import main
from common.loopback import free_port
from federation import checkpoint

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
FLWR = str(Path(sys.executable).parent / "flwr")
# one pytest-xdist worker runs this module (loadfile, and loadgroup): its tests share one hub,
# two sites and a reference run
pytestmark = pytest.mark.xdist_group("deploy")


def own_address() -> str:
    """This machine's own non-loopback IPv4 address (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("10.255.255.255", 1))
        address = sock.getsockname()[0]
    assert not address.startswith("127."), "this test needs a non-loopback address on this machine"
    return address


def wait_for_port(host: str, port: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited with {process.returncode} before listening on {host}:{port}"
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listening on {host}:{port}")


def fedsite(*args: str, env: dict, log: Path | None = None, background: bool = False):
    cmd = [sys.executable, "-m", "common.cli", *args]
    if background:
        return subprocess.Popen(cmd, env=env, stdout=open(log, "a"), stderr=subprocess.STDOUT, start_new_session=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def tree(process: subprocess.Popen) -> list[psutil.Process]:
    try:
        root = psutil.Process(process.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop(process: subprocess.Popen) -> None:
    """Stop a process and everything it started (a test's last resort; the supervisors do it themselves)."""
    members = tree(process)
    for proc in members:
        try:
            proc.send_signal(signal.SIGTERM if proc.pid == process.pid else signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
    for proc in members:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


def test_certs_make_keeps_the_ca_key_apart_and_sites_make_their_own_keys(tmp_path):
    from cryptography import x509

    certs = tmp_path / "certs"
    assert main(["certs", "make", "--out", str(certs), "--host", "10.0.0.5"]) == 0
    assert sorted(p.name for p in certs.iterdir()) == ["ca.crt", "server.key", "server.pem"]
    ca_key = tmp_path / "certs-ca-private" / "ca.key"
    assert ca_key.exists() and oct(ca_key.stat().st_mode & 0o777) == "0o600"
    ca = x509.load_pem_x509_certificate((certs / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((certs / "server.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"10.0.0.5", "127.0.0.1"} <= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    assert oct((certs / "server.key").stat().st_mode & 0o777) == "0o600"
    # the CA key may not be put into the hub's directory, and a hub directory holding it is refused
    assert main(["certs", "make", "--out", str(tmp_path / "c2"), "--ca-key", str(tmp_path / "c2" / "ca.key")]) == 2
    (certs / "ca.key").write_bytes(ca_key.read_bytes())
    assert main(["hub", "start", "--certs", str(certs), "--state", str(tmp_path / "h")]) == 2
    # a site's key pair is made at the site; the private half is its owner's only, never overwritten
    assert main(["site", "keygen", "--name", "hospital-a", "--out", str(tmp_path / "site")]) == 0
    assert (tmp_path / "site" / "hospital-a.pub").read_text().startswith("ecdsa-sha2-nistp384 ")
    assert oct((tmp_path / "site" / "hospital-a.key").stat().st_mode & 0o777) == "0o600"
    assert main(["site", "keygen", "--name", "hospital-a", "--out", str(tmp_path / "site")]) == 2


def test_hub_and_site_refuse_missing_files_with_exit_2(tmp_path):
    assert main(["hub", "start", "--certs", str(tmp_path / "nope"), "--state", str(tmp_path / "h")]) == 2
    args = ["site", "start", "--data", str(tmp_path), "--ca", str(tmp_path / "ca.crt"), "--key", str(tmp_path / "k")]
    assert main([*args, "--state", str(tmp_path / "s")]) == 2


def test_the_gate_passes_only_the_fleet_api():
    from federation.gate import fleet_path

    assert fleet_path("POST", "/v1/fleet/pull-messages") == "/v1/fleet/pull-messages"
    for method, path in [
        ("POST", "/v1/control/register-node"),
        ("POST", "/v1/control/start-run"),
        ("POST", "/v1/runtime/pull-messages"),
        ("POST", "/v1/fleet/../control/list-nodes"),
        ("POST", "/v1/fleet"),
        ("GET", "/v1/fleet/pull-messages"),
        ("GET", "/docs"),
    ]:
        assert fleet_path(method, path) is None, path


def test_failures_are_recorded_as_what_happened():
    from flwr.app import Error
    from flwr.common.constant import ErrorCode

    from federation.server_app import failure_of

    assert failure_of(Error(ErrorCode.NODE_UNAVAILABLE, "Error: Node Unavailable - no heartbeat")).startswith(
        "offline: "
    )
    assert failure_of(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, "Traceback\nValueError: bad scan")) == (
        "error: ValueError: bad scan"
    )
    assert failure_of(Error(ErrorCode.CLIENT_APP_CRASHED, "killed")) == "crashed: killed"


def attacker_home(tmp_path: Path, ca: Path, address: str) -> tuple[dict, Path]:
    """A separate FLWR_HOME holding only the public ca.crt and a key pair of the attacker's own."""
    home = tmp_path / "attacker"
    home.mkdir(parents=True)
    (home / "ca.crt").write_bytes(ca.read_bytes())
    assert main(["site", "keygen", "--name", "mallory", "--out", str(home)]) == 0
    hub = {"address": address, "root-certificates": str(home / "ca.crt")}
    (home / "config.toml").write_text(tomli_w.dumps({"superlink": {"default": "hub", "hub": hub}}))
    env = dict(os.environ, FLWR_HOME=str(home), FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1")
    return env, home


def flwr(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([FLWR, *args], env=env, capture_output=True, text=True, timeout=120)


class Deployment:
    """A hub on this machine's own address and two registered sites, all real processes."""

    def __init__(self, tmp: Path, task) -> None:
        self.tmp, self.address = tmp, own_address()
        self.env = dict(os.environ, FEDSITE_THREADS="1",
                        PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))  # fmt: skip
        self.env.pop("FLWR_HOME", None)
        self.certs, self.hub_home = tmp / "certs", tmp / "hub_state"
        self.sites = {f"site-{k}": tmp / f"site-{k}" for k in range(2)}
        self.port, self.control, self.registry = free_port(), free_port(), free_port()
        self.processes: list[subprocess.Popen] = []
        self.hub: subprocess.Popen | None = None
        self.runs: dict[str, Path] = {}
        assert main(["certs", "make", "--out", str(self.certs), "--host", self.address]) == 0
        for k, (name, home) in enumerate(self.sites.items()):
            task.synthesize(home / "data", seed=0, site=k, n_sites=2, scale="tiny")
            assert main(["site", "keygen", "--name", name, "--out", str(home / "keys")]) == 0
        # the operator's app-signing key (kept off the hub in real life) and this checkout, signed
        self.operator_key = tmp / "operator" / "operator.key"
        assert main(["hub", "keygen", "--out", str(self.operator_key.parent)]) == 0
        assert main(["hub", "sign", "--key", str(self.operator_key), "--state", str(self.hub_home)]) == 0

    def start_hub(self) -> subprocess.Popen:
        self.hub = fedsite("hub", "start", "--certs", str(self.certs), "--host", self.address,
                           "--port", str(self.port), "--control-port", str(self.control),
                           "--registry-port", str(self.registry), "--state", str(self.hub_home),
                           env=self.env, log=self.tmp / "hub.log", background=True)  # fmt: skip
        self.processes.append(self.hub)
        wait_for_port(self.address, self.port, self.hub)
        return self.hub

    def start_site(self, name: str, key: Path, data: Path, state: Path, *extra: str) -> subprocess.Popen:
        site = fedsite("site", "start", "--data", str(data), "--name", name, "--key", str(key),
                       "--hub", f"{self.address}:{self.port}", "--ca", str(self.certs / "ca.crt"),
                       "--port", str(free_port()), "--state", str(state),
                       "--trust", str(self.operator_key.with_suffix(".pub")), *extra, env=self.env,
                       log=self.tmp / f"{name}.log", background=True)  # fmt: skip
        self.processes.append(site)
        return site

    def operator(self, *args: str) -> subprocess.CompletedProcess:
        """A `flwr` command of the hub's operator, on the hub machine (its FLWR_HOME)."""
        return flwr(*args, env=dict(self.env, FLWR_HOME=str(self.hub_home)))

    def nodes(self) -> list[dict]:
        done = self.operator("supernode", "list", "fedsite", "--format", "json")
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)["nodes"]

    def run(self, out: Path, *extra: str, background: bool = False):
        args = ["hub", "run", "--vertical", "reference", "--task-module", "reference_task", "--tiny",
                "--sites", "2", "--rounds", "2", "--eval-every", "2", "--no-cross-site", "--out", str(out),
                "--state", str(self.hub_home), *extra]  # fmt: skip
        if background:
            return fedsite(*args, env=self.env, log=self.tmp / f"{out.name}.log", background=True)
        return fedsite(*args, env=self.env)

    def run_to_first_checkpoint(self, out: Path, *extra: str) -> subprocess.Popen:
        """A background run, returned once its first checkpoint is on disk (failing if it ends first)."""
        run = self.run(out, *extra, background=True)
        self.processes.append(run)
        deadline = time.monotonic() + 300
        while not (out / "checkpoints" / "checkpoint.npz").exists():
            assert run.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
            time.sleep(0.1)
        return run

    def run_keeping_round_one(self, out: Path, *extra: str) -> Path:
        """A two-round run that must succeed; its round-1 checkpoint, which round 2 replaces, is kept
        as OUT-round-1/checkpoints/ (checkpoint.load reads it)."""
        run = self.run(out, *extra, background=True)
        self.processes.append(run)
        live, kept = out / "checkpoints" / checkpoint.NAME, out.with_name(f"{out.name}-round-1") / "checkpoints"
        deadline = time.monotonic() + 600
        while run.poll() is None and time.monotonic() < deadline:
            if not kept.exists() and live.exists():  # replaced by rename: a copy is one whole checkpoint
                kept.mkdir(parents=True)
                shutil.copyfile(live, kept / checkpoint.NAME)
            time.sleep(0.05)
        assert run.wait(timeout=30) == 0, (self.tmp / f"{out.name}.log").read_text()[-3000:]
        assert checkpoint.load(kept.parent)["round"] == 1
        return out

    def reference(self) -> Path:
        """An uninterrupted two-round run (made once, shared by the tests that compare with it)."""
        if "reference" not in self.runs:
            self.runs["reference"] = self.run_keeping_round_one(self.tmp / "reference")
        return self.runs["reference"]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    from common import registry

    registry.VERTICALS["reference"] = "reference_task"
    import reference_task

    dep = Deployment(tmp_path_factory.mktemp("deploy"), reference_task.TASK)
    try:
        dep.start_hub()
        for name, home in dep.sites.items():
            done = fedsite("hub", "register", str(home / "keys" / f"{name}.pub"), "--state", str(dep.hub_home),
                           env=dep.env)  # fmt: skip
            assert done.returncode == 0, done.stderr
            dep.start_site(name, home / "keys" / f"{name}.key", home / "data", home / "state")
        yield dep
    finally:
        for process in dep.processes:
            stop(process)
        registry.VERTICALS.pop("reference", None)
        assert all(p.poll() is not None for p in dep.processes)


@pytest.mark.slow
def test_a_stranger_with_the_ca_certificate_is_refused_register_list_and_run(deployment, tmp_path):
    """The attack of issue 17, from a separate FLWR_HOME holding only ca.crt and the attacker's key,
    against the hub's address on this machine's non-loopback interface."""
    dep = deployment
    # the SuperLink itself (its Control API) does not listen on the sites' address at all
    with socket.socket() as sock:
        assert sock.connect_ex((dep.address, dep.control)) != 0
    stranger, mallory = attacker_home(tmp_path, dep.certs / "ca.crt", f"{dep.address}:{dep.port}")
    attempts = {
        "register": flwr("supernode", "register", str(mallory / "mallory.pub"), "hub", env=stranger),
        "list nodes": flwr("supernode", "list", "hub", env=stranger),
        "list runs": flwr("ls", "hub", env=stranger),
        "run": flwr("run", str(ROOT), "hub", env=stranger),
    }
    for what, done in attempts.items():
        said = done.stdout + done.stderr
        assert done.returncode != 0, f"{what} was not refused: {said[-500:]}"
        assert "404 Not Found" in said, f"{what}: {said[-500:]}"  # answered by the gate, not by Flower
        assert "registered successfully" not in said and "node-id" not in said, what
    nodes = dep.nodes()
    assert len(nodes) == 2, nodes  # the two sites, not the stranger's key
    # the same stranger's commands pointed at the SuperLink's own port are served: what the gate keeps
    # off the network is reachable from the hub machine itself (see the README's threat model)
    local, _ = attacker_home(tmp_path / "on-hub", dep.certs / "ca.crt", f"127.0.0.1:{dep.control}")
    assert flwr("supernode", "list", "hub", env=local).returncode == 0


@pytest.mark.slow
def test_two_sites_train_two_rounds_through_the_gate_with_their_state_at_the_sites(deployment, tmp_path):
    dep = deployment
    assert main(["site", "keygen", "--name", "rogue", "--out", str(tmp_path / "rogue")]) == 0
    rogue = dep.start_site("rogue", tmp_path / "rogue" / "rogue.key", dep.sites["site-0"] / "data",
                           tmp_path / "rogue" / "state", "--retries", "1")  # fmt: skip
    out = dep.reference()
    history = json.loads((out / "history.json").read_text())
    assert history["sites"] == ["site-0", "site-1"] and len(history["rounds"]) == 2
    for record in history["rounds"]:
        assert all(record["sites"][s]["status"] == "ok" for s in ("site-0", "site-1"))
        assert record["sites"]["site-0"]["bytes_sent"] > 0
    assert (out / "global_model" / "model.pt").exists()
    # every piece of site state is under the site's own --state, none under the hub's out dir
    assert not (out / "site_state").exists()
    for name, home in dep.sites.items():
        assert len(list((home / "state" / "site_state" / name).glob("run-*/optimizer-2.pt"))) == 1, name
    # the unregistered site was turned away and gave up
    assert rogue.wait(timeout=60) != 0
    assert "Failed to activate SuperNode" in (dep.tmp / "rogue.log").read_text()


@pytest.mark.slow
def test_secure_aggregation_across_real_processes_ends_where_fedavg_does(deployment):
    """`hub run --secagg` over the real SuperLink and SuperNodes (two sites: every site holds a share
    of every key, both needed to unmask). Each round's aggregate may differ from FedAvg's only by
    SecAgg+'s quantization (secagg.error_bound) and float32 rounding: checked on round 1, where both
    runs start from the same model, and on the final model with the bound of each round added up."""
    from federation.secagg import error_bound

    dep = deployment
    reference = dep.reference()
    out = dep.run_keeping_round_one(dep.tmp / "secure", "--secagg")
    history = json.loads((out / "history.json").read_text())
    assert history["secure_aggregation"]["key_shares"] == 2 and history["secure_aggregation"]["threshold"] == 2
    plain = json.loads((reference / "history.json").read_text())
    bound, rounding = 0.0, 0.0
    for record, plain_record in zip(history["rounds"], plain["rounds"], strict=True):
        assert record["aggregated"] and all(e["status"] == "ok" for e in record["sites"].values()), record
        assert all(e["bytes_sent"] > 0 for e in record["sites"].values())
        assert not any("payload_bytes" in e for e in record["sites"].values())  # no update reached the hub
        examples = [e["train"]["num-examples"] for e in record["sites"].values()]
        assert examples == [e["train"]["num-examples"] for e in plain_record["sites"].values()]
        bound += error_bound(examples)
        ours, theirs = (checkpoint.load(run.with_name(f"{run.name}-round-1") if record["round"] == 1 else run)
                        for run in (out, reference))  # fmt: skip
        assert ours["round"] == theirs["round"] == record["round"]
        a, b = ours["model"].vector, theirs["model"].vector
        rounding += 2 * float(np.spacing(np.abs(b).max()))  # the float32 sum with the global model
        gap = float(np.abs(a - b).max())
        cost = {name: (f"{r['seconds']:.1f} s, sites sent {sum(e['bytes_sent'] for e in r['sites'].values())} B, "
                       f"received {sum(e['bytes_received'] for e in r['sites'].values())} B")
                for name, r in (("FedAvg", plain_record), ("SecAgg+", record))}  # fmt: skip
        print(f"round {record['round']}: max |SecAgg+ - FedAvg| = {gap:.3g} per weight, bound {bound + rounding:.3g}; "
              f"{'; '.join(f'{k} {v}' for k, v in cost.items())}")  # fmt: skip
        assert 0 < gap <= bound + rounding, (record["round"], gap, bound + rounding)


@pytest.mark.slow
def test_hub_stops_cleanly_keeps_its_state_and_a_killed_run_resumes_bit_identical(deployment):
    """SIGTERM mid-run: hub, SuperLink and every helper (SuperExec, the run's ServerApp) gone within
    10 s; restarted on its state directory the hub still has its sites and runs; `hub run --resume`
    continues from the last completed round and ends with the uninterrupted run's model, bit for bit."""
    dep = deployment
    reference = dep.reference()
    before = {n["node-id"] for n in dep.nodes()}
    out = dep.tmp / "interrupted"
    run = dep.run_to_first_checkpoint(out)
    members = tree(dep.hub)
    names = sorted(p.name() for p in members)
    assert any("serverapp" in n for n in names) and any("superexe" in n for n in names), names
    began = time.monotonic()
    dep.hub.send_signal(signal.SIGTERM)
    assert dep.hub.wait(timeout=10) == 0
    _, alive = psutil.wait_procs(members, timeout=max(0.1, 10 - (time.monotonic() - began)))
    assert not alive, [(p.pid, p.name()) for p in alive]
    print(f"hub with {len(members)} processes ({', '.join(names)}) stopped in {time.monotonic() - began:.1f} s")
    assert run.wait(timeout=60) != 0
    assert not (out / "history.json").exists(), "the hub was stopped too late to interrupt the run"

    dep.start_hub()
    runs = dep.operator("ls", "fedsite", "--format", "json")
    assert runs.returncode == 0, runs.stdout + runs.stderr
    assert len(json.loads(runs.stdout)["runs"]) >= 2  # the reference run and the interrupted one
    assert {n["node-id"] for n in dep.nodes()} == before  # no site had to be registered again
    done = dep.run(out, "--resume")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "resuming after round 1" in done.stdout + done.stderr
    import torch

    ours = torch.load(out / "global_model" / "model.pt", weights_only=True)
    theirs = torch.load(reference / "global_model" / "model.pt", weights_only=True)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.slow
def test_sites_refuse_an_app_unsigned_or_signed_by_another_key(deployment, tmp_path):
    """The checkout sent unsigned (`flwr run DIR`, as a stranger on the hub machine could), and
    mallory's variant of it signed with mallory's key and served by the hub exactly as the operator's
    app is, are each refused by every site (Flower's trusted entities): no site trains, both runs fail.
    The two runs go at once (each site refuses both within seconds, without starting the app); their
    apps differ in one line, since the SuperLink keeps one app (and its signatures) per content hash."""
    import io
    import zipfile

    from flwr.cli.build import build_fab_from_disk

    from federation import appsign, deploy

    dep = deployment
    logs = {name: dep.tmp / f"{name}.log" for name in dep.sites}
    seen = {name: log.stat().st_size for name, log in logs.items()}
    assert main(["hub", "keygen", "--out", str(tmp_path), "--name", "mallory"]) == 0
    zipfile.ZipFile(io.BytesIO(build_fab_from_disk(deploy.app_dir()))).extractall(tmp_path / "app")
    with open(tmp_path / "app" / "federation" / "__init__.py", "a") as module:
        module.write("# mallory was here\n")
    # mallory's app is the newest signed one in the hub's apps/: `hub run` submits it, the hub serves it
    appsign.build_and_sign(tmp_path / "app", tmp_path / "mallory.key", dep.hub_home / deploy.APPS)
    try:
        app_id, version = appsign.app_identity(deploy.app_dir())
        _, verifications = appsign.latest(dep.hub_home / deploy.APPS, app_id, version)
        mallory = appsign.key_id((tmp_path / "mallory.pub").read_text())
        assert [v["public_key_id"] for v in verifications] == [mallory]
        outs = [dep.tmp / "unsigned", dep.tmp / "mallory-signed"]
        runs = [dep.run(outs[0], "--unsigned", background=True), dep.run(outs[1], background=True)]
        dep.processes.extend(runs)
        for out, run in zip(outs, runs, strict=True):
            assert run.wait(timeout=300) != 0, (dep.tmp / f"{out.name}.log").read_text()[-2000:]
            assert not (out / "history.json").exists()
    finally:  # the operator's signature, newest again, for the tests after this one
        assert main(["hub", "sign", "--key", str(dep.operator_key), "--state", str(dep.hub_home)]) == 0
    for name, log in logs.items():
        said = log.read_text(errors="replace")[seen[name] :]
        assert "The FAB could not be verified. App verification is not supported" in said, name  # unsigned
        assert "FAB verification failed: the provided trusted entities could not verify" in said, name  # mallory's


def test_only_the_operators_signature_verifies_with_flowers_own_check(tmp_path):
    """A FAB signed by the operator passes the check a SuperNode runs; one signed by another key, or
    one whose bytes changed after signing, does not."""
    import json as json_

    from flwr.supercore.fab import Fab
    from flwr.supernode.start_client_internal import _verify_fab

    from federation import appsign

    operator = appsign.make_operator_key(tmp_path / "op")
    other = appsign.make_operator_key(tmp_path / "other", "mallory")
    trusted = json_.loads(appsign.trusted_entities_file([operator["public"]], tmp_path / "te.yaml").read_text())
    fab = appsign.build_and_sign(ROOT, operator["private"], tmp_path / "apps").read_bytes()
    record = json_.loads(next((tmp_path / "apps").glob("*.signature.json")).read_text())

    def as_superlink_sends(fab_bytes: bytes, verifications: list[dict]) -> Fab:  # control_handlers._format_verification
        formatted = {v["public_key_id"]: json_.dumps({k: x for k, x in v.items() if k != "public_key_id"})
                     for v in verifications}  # fmt: skip
        return Fab("", fab_bytes, {**formatted, "valid_license": "Valid"})

    assert _verify_fab(as_superlink_sends(fab, record["verifications"]), trusted)
    forged = appsign.sign(fab, appsign.load_signing_key(other["private"]))
    assert not _verify_fab(as_superlink_sends(fab, [forged]), trusted)
    forged["public_key_id"] = record["verifications"][0]["public_key_id"]  # claiming to be the operator
    assert not _verify_fab(as_superlink_sends(fab, [forged]), trusted)
    assert not _verify_fab(as_superlink_sends(fab + b"x", record["verifications"]), trusted)


@pytest.mark.slow
def test_a_site_stopped_mid_run_is_recorded_offline_and_leaves_no_process(deployment):
    """SIGTERM to a site during a run: the site and all its helpers are gone within 10 s, the run
    completes with the other site (exit 3), and the record says the site went offline."""
    dep = deployment
    site = dep.processes[2]  # site-1 (the hub is processes[0])
    out = dep.tmp / "offline"
    run = dep.run_to_first_checkpoint(out, "--min-results", "1")
    members = tree(site)
    assert len(members) >= 2, [p.name() for p in members]
    began = time.monotonic()
    site.send_signal(signal.SIGTERM)
    assert site.wait(timeout=10) == 0
    _, alive = psutil.wait_procs(members, timeout=max(0.1, 10 - (time.monotonic() - began)))
    assert not alive, [(p.pid, p.name()) for p in alive]
    assert run.wait(timeout=300) == 3, (dep.tmp / "offline.log").read_text()[-3000:]
    history = json.loads((out / "history.json").read_text())
    errors = [r["sites"]["site-1"].get("error", "") for r in history["rounds"]]
    assert any(e.startswith("offline: ") for e in errors), errors
    assert all(r["sites"]["site-0"]["status"] == "ok" for r in history["rounds"])


def test_flowers_runtime_installer_installs_nothing_from_our_pyproject(tmp_path, monkeypatch):
    """What `flwr run .` does with this project when runtime installation was left on: Flower's own
    installer runs `uv sync` on our pyproject.toml; it must fail at once, offline, having installed nothing."""
    from flwr.supercore.superexec.dependency_installer import (
        RuntimeDependencyInstallationError,
        install_app_dependencies,
    )

    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr"))
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    began = time.monotonic()
    with pytest.raises(RuntimeDependencyInstallationError, match="index lookups were disabled|not found in the"):
        install_app_dependencies(tmp_path / "app", run_id=1)
    assert time.monotonic() - began < 30
    assert not list((tmp_path / "flwr").rglob("site-packages/torch"))
    assert not list((tmp_path / "flwr").rglob("*.whl"))
