"""Grain-stage variants measured on TRAINING-side data only (how grain.py's settings were chosen).

Never touches a test split of the held-out generator: each dataset's own train/good parts give the
per-direction RMS (first 32 or 16 parts) and the good side (the held-out 20 %, as `train` keeps aside);
the defective side is those held-out parts with synthetic anomalies from anomalies.py.

- `--mode validation`: oriented strokes (memory.validation_set, oriented=1.0); image AUROC (box mean of
  the evidence) and pixel AUROC, for stride (working resolution) 1/2, line length 25/49 (px of 256),
  flank offset 1/2/3, normalisation per image (`img`) or per direction over good parts (`glob`); on a
  first-generator dataset also the test split's scratches (the tuning generator);
- `--mode relation`: strokes drawn only ALONG or only ACROSS the grain (anomalies.oriented_stroke),
  image AUROC, global vs local (17 / 33 px window) normalisation.

    python benchmarks/grain_variants.py --mode validation runs/gen1/data/wood-full runs/gen1/data/metal-full
    python benchmarks/grain_variants.py --mode relation DATA_DIR [...]
"""

from __future__ import annotations

import argparse


def _responses(images, kernels, stride: int):
    import torch.nn.functional as F

    from verticals.manufacturing.data import to_tensor

    g = to_tensor(images).mean(1, keepdim=True)
    if stride > 1:
        g = F.avg_pool2d(g, stride)
    p = kernels.shape[-1] // 2
    return F.conv2d(F.pad(g, (p, p, p, p), mode="replicate"), kernels)


def _evidence(r, norm: str, glob):
    import torch.nn.functional as F

    if norm == "img":
        n = (r * r).mean(dim=(2, 3), keepdim=True).add(1e-8).sqrt()
    elif norm == "glob":
        n = glob
    else:  # local window of `norm` px, floored by 0.3 x the global RMS
        w = int(norm)
        n = F.avg_pool2d(r * r, w, 1, w // 2, count_include_pad=False).sqrt() + 0.3 * glob
    return F.max_pool2d((r.abs() / n).amax(1, keepdim=True), 3, 1, 1)


def _image_scores(z, pool: int):
    import torch.nn.functional as F

    return F.avg_pool2d(z, pool, 1, pool // 2, count_include_pad=False).amax(dim=(1, 2, 3)).numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+")
    parser.add_argument("--mode", choices=("validation", "relation"), default="validation")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import roc_auc_score

    from verticals.manufacturing.anomalies import oriented_stroke
    from verticals.manufacturing.config import InspectConfig
    from verticals.manufacturing.data import load_split, split_holdout
    from verticals.manufacturing.grain import ridge_kernels
    from verticals.manufacturing.memory import validation_set

    cfg = InspectConfig()
    torch.set_grad_enabled(False)
    for path in args.data:
        train, holdout = split_holdout(load_split(cfg, path, "train"), cfg.holdout)
        name = path.rstrip("/").split("/")[-1]
        if args.mode == "validation":
            images, labels, masks = validation_set(holdout, 0, copies=2, oriented=1.0)
            try:  # the first generator's test scratches (tuning generator only)
                test = load_split(cfg, path, "test")
                keep = np.array([k in ("good", "scratch") for k in test.kinds])
                test = test if "scratch" in test.kinds else None
            except Exception:
                test = None
            for stride in (2, 1):
                for length in (25, 49):
                    for offset in (1, 2, 3):
                        k = ridge_kernels(max(3, round(length / stride)), 16, offset)
                        r_train = _responses(train.images[:16], k, stride)
                        glob = (r_train * r_train).mean(dim=(0, 2, 3), keepdim=True).sqrt()
                        for norm in ("img", "glob"):
                            z = _evidence(_responses(images, k, stride), norm, glob)
                            pool = 9 // stride | 1
                            image = roc_auc_score(labels, _image_scores(z, pool))
                            up = F.interpolate(z, size=masks.shape[-2:], mode="bilinear")[:, 0].numpy()
                            pixel = roc_auc_score(masks.ravel(), up.ravel())
                            extra = ""
                            if test is not None:
                                zt = _evidence(_responses(test.images[keep], k, stride), norm, glob)
                                auc = roc_auc_score(test.labels[keep], _image_scores(zt, pool))
                                extra = f" test_scratch={auc:.3f}"
                            print(f"{name:24s} s{stride} L{length} o{offset} {norm:4s} val_img={image:.3f} "
                                  f"val_px={pixel:.3f}{extra}", flush=True)  # fmt: skip
            continue
        rng = np.random.default_rng(5)
        bad = {"along": [], "across": []}
        for relation, out in bad.items():
            for _ in range(2):
                for img in holdout.images:
                    o, _, _ = oriented_stroke(img.astype(np.float32) / 255, rng, relation)
                    out.append(np.clip(o * 255 + 0.5, 0, 255).astype(np.uint8))
        for length in (25, 49):
            for offset in (1, 2):
                k = ridge_kernels(round(length / 2), 16, offset)
                r_train = _responses(train.images[:32], k, 2)
                glob = (r_train * r_train).mean(dim=(0, 2, 3), keepdim=True).sqrt()
                r_good = _responses(holdout.images, k, 2)
                r_bad = {rel: _responses(np.stack(v), k, 2) for rel, v in bad.items()}
                for norm in ("glob", "17", "33"):
                    s_good = _image_scores(_evidence(r_good, norm, glob), 5)
                    cells = []
                    for rel, r in r_bad.items():
                        s_bad = _image_scores(_evidence(r, norm, glob), 5)
                        auc = roc_auc_score([0] * len(s_good) + [1] * len(s_bad), np.r_[s_good, s_bad])
                        cells.append(f"{rel}={auc:.3f}")
                    print(f"{name:24s} L{length} o{offset} {norm:4s} " + " ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
