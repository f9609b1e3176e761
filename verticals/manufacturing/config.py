"""Every default of the defect-inspection vertical in one frozen dataclass, and its named presets.

`PRESETS` holds the three sizes every vertical names alike: "tiny" (tests and the federated demo:
seconds per fit), "small" (`--quick`: a useful model in about a minute on 2 cores) and "default"
(the dataclass defaults, the benchmark's setting). common.config resolves overrides on top.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InspectConfig:
    """Model, training, calibration and post-processing settings.

    Images of any size are resized to `image_size` for the model; anomaly maps are resized back, so
    boxes and contours are always in the input image's own pixels.
    """

    # model
    image_size: int = 256
    width: int = 16  # channels of the first stage; later stages double it
    model_stride: int = 2  # the network runs at image_size / model_stride
    attention: str = "scse"  # common.blocks: scse, cbam or none
    reconstruction: bool = True  # DRAEM-style reconstruction branch feeding the segmenter
    fine_input: bool = False  # segmenter sees all input pixels (pixel_unshuffle), not 2x2 means (thin lines)
    grain_input: bool = False  # segmenter also sees the input against its own local grain (grain_residual.py)
    memory_size: int = 2048  # patch memory of good parts (memory.py); 0 disables it
    memory_patch: int = 5  # grey patch side at a quarter of image_size (model_stride 2)
    memory_pool: int = 2  # memory grid = working resolution / memory_pool (1: finer, for thin defects)
    memory_weights: str = "0,0.5,1,2"  # candidate weights of the memory logits, chosen on validation
    score_pool: int = 9  # image score = max of the map averaged over score_pool^2 (as a fraction of 256)
    score_pooling: str = "box"  # "line": also the max mean along 1-px lines at 16 angles (thin defects)
    score_line: int = 25  # length of those lines, in pixels of a 256 px image
    grain: bool = False  # grain residual (grain.py): oriented ridge detectors against the part's own grain
    grain_line: int = 25  # their line length, in pixels of a 256 px image
    grain_weights: str = "0,0.5,1,2"  # candidate weights of the grain logits, chosen on validation with the memory's
    # optional part localisation before the model (roi.py): crop every image to the part it shows
    roi: bool = False
    roi_margin: float = 0.05  # padding around the part's bounding box, as a fraction of its size
    roi_min_area_frac: float = 0.02  # smaller foreground: no part found, the whole frame is used
    # training (good images only; anomalies are synthesised on the fly)
    epochs: int = 48  # 2400 steps: about 5 min on one thread of a shared 2-core machine (run 4)
    steps_per_epoch: int = 50
    batch_size: int = 8
    crop: int = 128  # training crop (the model is fully convolutional)
    lr: float = 2e-3
    weight_decay: float = 1e-4  # AdamW's
    anomaly_prob: float = 0.7
    oriented_anomalies: float = 0.3  # share of anomalies drawn as thin strokes along/across the grain (README)
    blob_soft: float = 2.5  # intensity blobs' largest edge blur, px per 128 px of crop (diffuse stains: README)
    recon_weight: float = 1.0
    max_train_seconds: float = 0.0  # stop early past this wall time (0: no limit); a guard for shared CPUs
    holdout: float = 0.2  # fraction of train/good kept aside to calibrate thresholds
    # calibration and post-processing (OpenCV)
    target_frr: float = 0.02  # image threshold: false-reject rate on held-out good parts
    pixel_fpr: float = 0.002  # pixel threshold: false-positive pixel rate on held-out good parts
    min_pixel_threshold: float = 0.3
    blur_sigma: float = 1.5  # Gaussian smoothing of the anomaly map, in image_size pixels
    blur_candidates: str = "1.5,4,8"  # train picks blur_sigma among these on validation ("": keep blur_sigma)
    morph_kernel: int = 3
    min_area_frac: float = 0.0005  # components smaller than this fraction of the image are dropped
    box_iou: float = 0.1  # a predicted box matches a ground-truth defect at this IoU
    # deployment
    int8: str = "auto"  # auto: use static INT8 in ONNX Runtime only when measured faster and faithful
    infer_batch: int = 4
    seed: int = 0


PRESETS: dict[str, InspectConfig] = {
    # 64 px, narrow, a few dozen steps: seconds per fit, still learns to flag obvious defects. No patch
    # memory: FedAvg would average different sites' memories row by row, which means nothing; a
    # federated memory needs its own aggregation (concatenate + coreset), not done yet.
    "tiny": InspectConfig(
        image_size=64,
        width=8,
        epochs=3,
        steps_per_epoch=25,
        batch_size=8,
        crop=64,
        infer_batch=8,
        blur_sigma=1.0,
        blur_candidates="",
        memory_size=0,
        oriented_anomalies=0.0,  # the federated figures and tests were measured without them
    ),
    # `synth --quick` data (128 px): a quarter of the default's pixels and a quarter of its steps
    "small": InspectConfig(image_size=128, epochs=12, crop=96, memory_size=1024),
    "default": InspectConfig(),
}

# Federated recipes (federation/recipes.py; `fedsite federate --recipe NAME`, the demo, the benchmark).
# "federated": 50 rounds x 3 batches per site (the same 150 batches as 3 rounds x 2 epochs of 25: FedBN,
# seeds 0-2, AUROC 0.743 there, 0.820 here; the lines make different products and drift apart fast);
# each line keeps its own BatchNorm and input statistics (FedBN, federation/local_norm.py: a metal, a
# fabric and a wood line under different lights); sites score their labelled test parts (MVTec has no
# validation split). "quick": one round of one epoch on tiny data.
RECIPES: dict[str, dict] = {
    "federated": {
        "preset": "tiny", "scale": "small", "rounds": 50, "local_epochs": 1, "local_norm": True,
        "eval_split": "test", "config": {"steps_per_epoch": 3},
    },
    "quick": {
        "preset": "tiny", "scale": "tiny", "rounds": 1, "local_epochs": 1, "cross_site": False,
        "local_norm": True, "eval_split": "test",
    },
}  # fmt: skip
