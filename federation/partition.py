"""Per-site data for simulated federations: each site synthesizes its own, heterogeneous data.

Sites differ the way real ones do (scanners, customer mixes, production lines) because each
vertical's `Task.synthesize(site=k, n_sites=N)` makes them differ: a natural partition, not a
shuffle of one pool. A site's directory is built under a temporary name and renamed into place,
so an interrupted run never leaves half a site behind, and an existing complete site is reused
(a resumed run trains on the very same data).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from common import atomic
from common.progress import log
from federation.settings import site_name

MARKER = ".fedsite-site.txt"


def prepare_sites(
    task: Any, data_root: Path, n_sites: int, *, seed: int, scale: str, synthesize: Callable | None = None
) -> str:
    """Synthesize DATA_ROOT/site-0..N-1 (reusing complete ones); return the source path inside a site dir.

    `synthesize(directory, site_index) -> source path`, when given, replaces `task.synthesize` (the
    benchmark uses it for sites with larger held-out splits than the Task's named scales).
    """
    suffixes = set()
    for k in range(n_sites):
        site_dir = data_root / site_name(k)
        marker = site_dir / MARKER
        if marker.exists():
            suffixes.add(marker.read_text(encoding="utf-8").strip())
            continue
        log(f"synthesizing data for {site_name(k)} ({scale})")
        with atomic.atomic_dir(site_dir) as tmp:
            if synthesize is not None:
                source = Path(synthesize(tmp, k))
            else:
                source = Path(task.synthesize(tmp, seed=seed, site=k, n_sites=n_sites, scale=scale))
            rel = source.resolve().relative_to(tmp.resolve()).as_posix() if source.resolve() != tmp.resolve() else ""
            (tmp / MARKER).write_text(rel + "\n", encoding="utf-8")
        suffixes.add(rel)
    if len(suffixes) > 1:
        raise ValueError(f"sites under {data_root} disagree on their data layout: {sorted(suffixes)}")
    return suffixes.pop() if suffixes else ""


def dirichlet_partition(labels: np.ndarray, n_sites: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Indices per site with label proportions drawn from Dirichlet(alpha) (small alpha: very skewed).

    For splitting one labelled pool into non-IID sites (Hsu et al. 2019), e.g. when a user brings a
    single dataset; every site gets at least one example.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(n_sites)]
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        shares = rng.dirichlet(np.full(n_sites, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
        for site, chunk in enumerate(np.split(idx, cuts)):
            parts[site].extend(chunk.tolist())
    for site in range(n_sites):
        if not parts[site]:
            donor = int(np.argmax([len(p) for p in parts]))
            parts[site].append(parts[donor].pop())
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
