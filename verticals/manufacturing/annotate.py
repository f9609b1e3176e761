"""Pictures an operator can act on: heat map overlay, defect contours and boxes, OK/NG with score.

Plus a contact sheet per run (NG parts first) so a shift lead sees a whole batch at a glance.
Images are drawn in BGR, OpenCV's order, and returned ready for cv2.imwrite.
"""

from __future__ import annotations

import cv2
import numpy as np

from .postprocess import Verdict, display_score

OK_COLOUR = (60, 180, 60)  # BGR
NG_COLOUR = (40, 40, 230)


def annotate(image_rgb: np.ndarray, verdict: Verdict, image_threshold: float) -> np.ndarray:
    """The input image with the anomaly heat map blended in, contours, boxes and a verdict banner."""
    h, w = image_rgb.shape[:2]
    base = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    heat = cv2.resize(verdict.heatmap, (w, h), interpolation=cv2.INTER_LINEAR)
    coloured = cv2.applyColorMap(np.clip(heat * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    alpha = np.clip(heat, 0.15, 0.6)[..., None]  # strong where the model is sure, faint elsewhere
    out = (base * (1 - alpha) + coloured * alpha).astype(np.uint8)
    thick = max(1, round(min(h, w) / 200))
    if verdict.roi is not None:  # the located part (roi.py): what the model looked at
        x, y, rw, rh = verdict.roi
        cv2.rectangle(out, (x, y), (x + rw - 1, y + rh - 1), (200, 200, 0), thick)
    for defect in verdict.defects:
        if len(defect.contour):
            cv2.drawContours(out, [defect.contour], -1, (255, 255, 255), thick)
        cv2.rectangle(out, (defect.x, defect.y), (defect.x + defect.w - 1, defect.y + defect.h - 1), NG_COLOUR, thick)
    label = f"{'NG' if verdict.is_defective else 'OK'} {display_score(verdict.anomaly_score, image_threshold):.2f}"
    if verdict.is_defective:
        label += f" ({len(verdict.defects)})"
    colour = NG_COLOUR if verdict.is_defective else OK_COLOUR
    scale = max(0.35, min(h, w) / 400)
    (tw, th), base_line = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    cv2.rectangle(out, (0, 0), (tw + 8, th + base_line + 8), colour, -1)
    cv2.putText(out, label, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out


def thumbnail(annotated_bgr: np.ndarray, size: int = 160) -> np.ndarray:
    """Letterboxed square thumbnail of an annotated image."""
    h, w = annotated_bgr.shape[:2]
    scale = size / max(h, w)
    small = cv2.resize(
        annotated_bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )
    tile = np.full((size, size, 3), 32, np.uint8)
    y, x = (size - small.shape[0]) // 2, (size - small.shape[1]) // 2
    tile[y : y + small.shape[0], x : x + small.shape[1]] = small
    return tile


def legend(image_threshold: float) -> str:
    """The contact sheet's key to the scores on its tiles (postprocess.display_score)."""
    return f"score 0.50 = decision threshold (raw {image_threshold:.4f}); NG above, OK below"


def contact_sheet(
    tiles: list[tuple[str, np.ndarray]], columns: int = 8, size: int = 160, key: str | None = None
) -> np.ndarray:
    """A grid of (name, thumbnail) tiles with their names underneath, and `key` in a strip below."""
    if not tiles:
        return np.full((size, size, 3), 32, np.uint8)
    if key is not None:
        grid = contact_sheet(tiles, columns, size)
        strip = np.full((22, max(grid.shape[1], 8 * len(key)), 3), 16, np.uint8)
        cv2.putText(strip, key, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (230, 230, 230), 1, cv2.LINE_AA)
        if strip.shape[1] > grid.shape[1]:
            grid = np.hstack([grid, np.full((grid.shape[0], strip.shape[1] - grid.shape[1], 3), 16, np.uint8)])
        return np.vstack([grid, strip])
    columns = min(columns, len(tiles))
    rows = (len(tiles) + columns - 1) // columns
    caption = 18
    sheet = np.full((rows * (size + caption), columns * size, 3), 16, np.uint8)
    for i, (name, tile) in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = r * (size + caption), c * size
        sheet[y : y + size, x : x + size] = tile
        text = name if len(name) <= 24 else "..." + name[-21:]
        cv2.putText(
            sheet, text, (x + 3, y + size + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (220, 220, 220), 1, cv2.LINE_AA
        )
    return sheet
