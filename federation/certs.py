"""TLS certificates for the hub and authentication keys for sites (`fedsite certs`).

Flower encrypts SuperLink <-> SuperNode traffic with TLS (the hub presents a certificate signed by
a CA the sites trust) and authenticates sites by elliptic-curve key pairs: a site signs its
requests with its private key, and a hub started with supernode authentication only accepts
sites whose public key was registered (`flwr supernode register`). Keys are generated locally
with `cryptography`; private keys are written with mode 0600.

Where each key lives: a site makes its own key pair (`fedsite site keygen`) and only its public key
travels to the hub. The CA's private key signs the hub's certificate once and is then needed only
to renew it, so `make_tls` writes it apart from the certificates directory the hub runs with
(default: a sibling `<certs>-ca-private/`); `fedsite hub start` refuses a certificates directory
that holds it. Keep it offline (an encrypted USB key, a vault), never on the hub.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from common.atomic import write_bytes


def _write_private(path: Path, data: bytes) -> None:
    write_bytes(path, data, private=True)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedsite"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for host in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


LOOPBACK = ["127.0.0.1", "localhost"]
CA_KEY = "ca.key"


def default_ca_key(out: Path) -> Path:
    """Where `certs make --out OUT` puts the CA private key: beside OUT, never inside it."""
    out = Path(out).resolve()
    return out.parent / f"{out.name}-ca-private" / CA_KEY


def make_tls(out: Path, hosts: list[str], days: int = 365, ca_key_path: Path | None = None) -> dict[str, Path]:
    """A CA and a hub certificate valid for `hosts` (IP addresses or DNS names) and loopback.

    Loopback is always in the certificate: the SuperLink itself listens on 127.0.0.1 behind the
    hub's gate (gate.py), which connects to it with the same CA. The CA private key goes to
    `ca_key_path` (default `default_ca_key(out)`), which must lie outside `out`.
    """
    out = Path(out)
    ca_key_path = Path(ca_key_path) if ca_key_path else default_ca_key(out)
    if ca_key_path.resolve().parent == out.resolve():
        raise ValueError(f"{ca_key_path}: the CA private key must not be written into the hub's directory {out}")
    hosts = list(dict.fromkeys([*hosts, *LOOPBACK]))
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("fedsite CA"))
        .issuer_name(_name("fedsite CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    plain = serialization.NoEncryption()
    paths = {"ca": out / "ca.crt", "ca_key": ca_key_path, "cert": out / "server.pem", "key": out / "server.key"}
    write_bytes(paths["ca"], ca_cert.public_bytes(pem))
    _write_private(paths["ca_key"], ca_key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, plain))
    write_bytes(paths["cert"], cert.public_bytes(pem))
    _write_private(paths["key"], key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, plain))
    return paths


def make_site_keys(out: Path, name: str) -> dict[str, Path]:
    """An EC (P-384) key pair in OpenSSH format, as Flower's SuperNode authentication expects.

    Run at the site (`fedsite site keygen`): the .key stays there, the .pub goes to the hub.
    Refuses to overwrite an existing key (a site's identity is not replaced by accident).
    """
    if (Path(out) / f"{name}.key").exists():
        raise FileExistsError(f"{Path(out) / f'{name}.key'}: exists; remove it first to make a new identity")
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    paths = {"private": out / f"{name}.key", "public": out / f"{name}.pub"}
    _write_private(paths["private"], private)
    write_bytes(paths["public"], public + f" {name}\n".encode())
    return paths
