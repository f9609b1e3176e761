"""The medical Task: wires config, model, training, inference and LUNA16 scoring into common.task's verbs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.task import FitContext, Task
from verticals.medical.config import PRESETS, RECIPES, MedicalConfig
from verticals.medical.data import MedicalData


class MedicalTask(Task):
    name = "medical"
    config_cls = MedicalConfig
    headline_metric = "cpm"
    higher_is_better = True
    presets = PRESETS
    recipes = RECIPES
    final_round_only = ("fp_reduction",)  # fitted on the finished detector's candidates

    def build_model(self, cfg: MedicalConfig) -> torch.nn.Module:
        from verticals.medical.model import build_detector

        return build_detector(cfg)

    def load_data(self, cfg: MedicalConfig, source: str | Path, split: str) -> MedicalData:
        from verticals.medical.data import load_split

        return load_split(cfg, source, split)

    def fit(self, model, data: MedicalData, cfg, *, epochs=None, context: FitContext | None = None) -> dict[str, float]:
        from verticals.medical.train import fit

        return fit(model, data, cfg, epochs=epochs, context=context)

    def evaluate(self, model, data: MedicalData, cfg) -> dict[str, float]:
        """CPM first. Calls only model(...) / model.eval(), so an ONNX Runtime wrapper module works too."""
        from verticals.medical.evaluate import score, summarise
        from verticals.medical.infer import detect_case, fp_params, torch_runner

        model.eval()
        runner = torch_runner(model)
        fp = fp_params(model)
        cands, ann = {}, {}
        for case in data.cases:
            found = detect_case(case, runner, cfg, fp)
            cands[case.seriesuid] = (found["xyz"], found["probability"])
            ann[case.seriesuid] = [(case.to_world(c[None])[0], d) for c, d in zip(case.nodules_vox, case.diameters)]
        _, per_scan = score(cands, ann)
        result = summarise(per_scan, n_bootstrap=0)
        flat = {"cpm": result["cpm"]}
        flat.update({f"froc_{k}": v for k, v in result["froc"].items()})
        flat["sensitivity_any"] = result["sensitivity_any"]
        err = result["median_centre_error_mm"]
        flat["median_centre_error_mm"] = err if np.isfinite(err) else -1.0
        return flat

    def example_input(self, cfg: MedicalConfig) -> tuple[torch.Tensor, ...]:
        return (torch.rand(1, 1, cfg.window, cfg.window, cfg.window),)

    def calibration_batches(self, data: MedicalData, cfg) -> list[tuple[torch.Tensor, ...]]:
        """Windows cut from the site's scans (batch of 2, to exercise the dynamic batch axis)."""
        w = cfg.window
        out = []
        for case in data.cases[:4]:
            img = np.zeros((w, w, w), np.float32)
            d, h, x = (min(s, w) for s in case.image.shape)
            img[:d, :h, :x] = case.image[:d, :h, :x]
            out.append(torch.from_numpy(np.stack([img, img[::-1].copy()])[:, None]))
        return [(b,) for b in out] or [(torch.rand(2, 1, w, w, w),)]

    def synthesize(self, out: Path, *, seed: int, site: int = 0, n_sites: int = 1, scale: str = "small") -> Path:
        from data_adapters.synth.ct_phantom import synth_dataset

        n_scans = {"tiny": 3, "small": 6, "full": 16}[scale]
        return synth_dataset(out, n_scans, seed=seed, site=site, n_sites=n_sites, scale=scale)


TASK = MedicalTask()
