"""Outputs a team can share: files 0644 and directories 0755 under umask 022; keys and secrets 0600.

`tempfile` makes its files 0600 and directories 0700; the atomic writers used to pass those modes
on to every output (model directories, reports, the hub's CA certificate).
"""

from __future__ import annotations

import dataclasses
import os
import stat

import pytest
from torch import nn

from common import atomic, runs
from federation import certs


@dataclasses.dataclass(frozen=True)
class _Cfg:
    """The smallest config save_model can write."""

    lr: float = 0.1


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Run a test under a chosen umask and restore the previous one."""
    before = os.umask(0o022)
    os.umask(before)

    def _set(mask: int) -> None:
        os.umask(mask)

    yield _set
    os.umask(before)


@pytest.mark.parametrize(
    ("mask", "file", "folder"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750), (0o077, 0o600, 0o700)]
)
def test_outputs_follow_the_umask(tmp_path, umask, mask, file, folder):
    umask(mask)
    atomic.write_text(tmp_path / "report.json", "{}\n")
    atomic.write_csv(tmp_path / "scores.csv", ["txn_id", "fraud_probability"], [["t1", 0.5]])
    with atomic.atomic_path(tmp_path / "plot.png", suffix=".png") as tmp:
        tmp.write_bytes(b"png")
    with atomic.atomic_dir(tmp_path / "out") as tmp:
        (tmp / "inside.txt").write_text("x")
        (tmp / "sub").mkdir()
    for name in ("report.json", "scores.csv", "plot.png", "out/inside.txt"):
        assert _mode(tmp_path / name) == file, name
    assert _mode(tmp_path / "out") == folder
    assert _mode(tmp_path / "out" / "sub") == folder


def test_replacing_a_directory_keeps_shared_modes(tmp_path, umask):
    umask(0o022)
    for text in ("old", "new"):
        with atomic.atomic_dir(tmp_path / "model") as tmp:
            (tmp / "weights").write_text(text)
    assert _mode(tmp_path / "model") == 0o755
    assert (tmp_path / "model" / "weights").read_text() == "new"


def test_model_directory_is_readable_by_the_team(tmp_path, umask):
    umask(0o022)
    out = runs.save_model(tmp_path / "model", "finance", nn.Linear(2, 1), cfg=_Cfg(), metrics={"auprc": 0.5})
    assert _mode(out) == 0o755
    for name in ("model.pt", "config.toml", "metadata.json"):
        assert _mode(out / name) == 0o644, name


@pytest.mark.parametrize("mask", [0o022, 0o000])
def test_private_files_stay_owner_only_whatever_the_umask(tmp_path, umask, mask):
    umask(mask)
    atomic.write_bytes(tmp_path / "site.secret", b"s3cret", private=True)
    assert _mode(tmp_path / "site.secret") == 0o600
    with atomic.atomic_path(tmp_path / "token", private=True) as tmp:
        assert _mode(tmp) == 0o600  # before the first byte is written
        tmp.write_bytes(b"t")
    assert _mode(tmp_path / "token") == 0o600
    atomic.write_csv(tmp_path / "crosswalk.csv", ["original", "replacement"], [["1.2.3", "2.25.9"]], private=True)
    assert _mode(tmp_path / "crosswalk.csv") == 0o600


def test_keys_private_certificates_public(tmp_path, umask):
    umask(0o022)
    tls = certs.make_tls(tmp_path / "tls", ["127.0.0.1"])
    site = certs.make_site_keys(tmp_path / "keys", "site-0")
    assert _mode(tls["ca"]) == _mode(tls["cert"]) == _mode(site["public"]) == 0o644
    private = [path for key, path in {**tls, **site}.items() if key in ("ca_key", "key", "private")]
    assert private and all(_mode(path) == 0o600 for path in private)
