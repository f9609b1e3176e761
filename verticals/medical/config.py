"""Every default of the CT nodule detector in one frozen dataclass (common.config resolves overrides).

Defaults are sized for `fedsite medical train` on ~16 scans of ~192x192x72 voxels on 2 CPU cores
(well inside 20 minutes). `PRESETS` holds the three sizes every vertical names alike: "tiny"
(tests: seconds per fit), "small" (`--quick` and the federated demo, on `synth --scale small` data:
coarse 5 mm grid, small windows) and "default" (these defaults).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class MedicalConfig:
    # preprocessing: resample to this isotropic spacing (mm), then window HU to [0, 1]
    spacing_mm: float = 2.0
    hu_min: float = -1000.0
    hu_max: float = 400.0
    # model: compact 3D encoder-decoder; output grid at `stride` (heatmap, offset, diameter heads)
    channels: tuple[int, int, int, int] = (12, 24, 40, 64)
    attention: str = "scse"
    stride: int = 2
    # training: patches with positive/negative sampling and flip/transpose augmentation
    patch: int = 64
    batch_size: int = 4
    epochs: int = 40
    steps_per_epoch: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    grad_clip: float = 5.0  # max global gradient norm per step
    positive_fraction: float = 0.6
    # domain randomisation of what ct_phantom.py fixes (train.randomise_*): each patch is resampled by
    # a per-axis zoom in aug_scale (nodules 3-40 mm from its 4-30 mm, ellipsoidal, vessels thicker or
    # thinner), its tissues' HU levels moved independently (std aug_tissue_hu at each knot of a monotone
    # HU map: lung, ground glass, soft tissue apart), and a smooth texture of up to aug_texture_hu HU
    # added to aerated lung. Off by default: with (0.75, 1.35) / 50 / 60 the 24-epoch 48^3 recipe scored
    # CPM 0.756 on its own generator and 0.279 on ct_holdout.py against 0.834 / 0.316 without
    # (2026-12-03, README "Domain randomisation"); (1.0, 1.0) / 0 turn them off
    aug_scale: tuple[float, float] = (1.0, 1.0)
    aug_tissue_hu: float = 0.0
    aug_texture_hu: float = 0.0
    # probability that each nodule in a training patch is faded into a faint subsolid one (train.fade_nodules:
    # contrast to the surrounding lung cut to 15-70 %, soft edge, half keep a small solid core); 0 = off
    aug_nodule_fade: float = 0.0
    heatmap_sigma_scale: float = 0.4
    min_sigma_vox: float = 0.8
    # inference: sliding window (voxels at model spacing), decoding, NMS, FP reduction
    window: int = 96
    overlap: float = 0.25
    # test-time augmentation: also run the volume flipped along these axes (0 z, 1 y, 2 x = left-right)
    # and average the outputs mapped back onto the same grid; () turns it off (half the network time)
    tta_flip_axes: tuple[int, ...] = (2,)
    # multi-scale inference (infer.detect_case): the network also runs on the volume resampled to these
    # coarser spacings and the candidates of every grid are merged by NMS; () = the main grid alone.
    # (3.0,) on the shipped weights: own generator CPM 0.834 -> 0.866, held-out generator 0.402 -> 0.399,
    # a real 14 mm nodule from rank 2 (p 0.011) to rank 1 (README "Multi-scale inference")
    extra_spacings_mm: tuple[float, ...] = (3.0,)
    score_threshold: float = 0.05
    max_candidates: int = 40
    # candidates with a final (calibrated) probability below this are not reported: a scan returns
    # what it finds, not max_candidates every time
    min_probability: float = 0.02
    # anatomy (lungmask.py / masses.py): candidates' centres must lie within lung_margin_mm of the
    # lungs (juxtapleural nodules sit on the wall); masses are soft-tissue lumps > mass_min_mm inside them
    lung_mask: bool = True
    lung_margin_mm: float = 10.0
    # bone (> 200 HU) outside the filled lungs is never a candidate's centre: ribs lie within the margin
    lung_exclude_bone: bool = True
    mass_min_mm: float = 30.0
    # held-out share of the training scans used to calibrate the final probabilities (Platt scaling)
    calibration_fraction: float = 0.25
    nms_mm: float = 8.0
    fp_reduction: bool = True
    seed: int = 0


_SMALL = MedicalConfig(
    spacing_mm=5.0,
    channels=(8, 16, 24, 32),
    patch=32,
    window=32,
    batch_size=4,
    epochs=12,
    steps_per_epoch=20,
    lr=4e-3,
    nms_mm=10.0,
    max_candidates=20,
    heatmap_sigma_scale=0.5,
    extra_spacings_mm=(),  # its 5 mm grid is already coarser
)
PRESETS: dict[str, MedicalConfig] = {
    "tiny": replace(_SMALL, epochs=2, steps_per_epoch=6),
    "small": _SMALL,
    "default": MedicalConfig(),
}

# Federated recipes (federation/recipes.py; `fedsite federate --recipe NAME`, the demo, the benchmark).
# "federated": many short rounds, 40 x 8 batches per site (the same 320 as 4 rounds x 4 epochs of 20,
# which scored CPM 0.611 against 0.711: the less a site drifts between averages, the better the
# average), with one learning-rate schedule over the 40 rounds instead of OneCycle's warm-up and decay
# replayed in every round (seeds 0-1: 0.690 vs 0.642); the FP-reduction stage is fitted in the last
# round only (Task.final_round_only). "quick": one round of the tiny preset, a smoke run.
RECIPES: dict[str, dict] = {
    "federated": {
        "preset": "small", "scale": "small", "rounds": 40, "local_epochs": 1, "one_schedule": True,
        "config": {"steps_per_epoch": 8},
    },
    # one round: no stage to hold back for a last one
    "quick": {
        "preset": "tiny", "scale": "tiny", "rounds": 1, "local_epochs": 1, "cross_site": False, "final_round_only": [],
    },
}  # fmt: skip
