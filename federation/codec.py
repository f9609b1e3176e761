"""Model updates as flat vectors, and their compression on the wire (int8 or top-k with error feedback).

Sites send the *change* of the model (local - global), flattened into one float32 vector in the
model's state_dict order. One vector instead of one array per tensor keeps the per-array framing of
Flower's messages out of the byte count, so int8 really costs one byte per weight plus one scale per
chunk; the codes are then deflated (zlib, lossless) when that makes them smaller. Quantization is
lossy; error feedback (Seide et al. 2014; Karimireddy et al. 2019) keeps what was lost in a
residual and adds it to the next round's update, so the loss does not accumulate.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

CODECS = ("none", "int8", "topk")
INT8_CHUNK = 4096
DEFLATE_LEVEL = 9


def int8_raw_bytes(size: int) -> int:
    """Payload of an int8-encoded update of `size` weights before the lossless deflate (scales + codes)."""
    return 4 * -(-size // INT8_CHUNK) + size


@dataclass(frozen=True)
class Layout:
    """Names, shapes and dtypes of the floating-point entries of a state_dict, in order."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]

    @property
    def size(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.shapes))


def layout_of(state: dict[str, torch.Tensor]) -> Layout:
    """The float entries of `state` (integer buffers such as BatchNorm counters travel separately)."""
    items = [(k, v) for k, v in state.items() if torch.is_floating_point(v)]
    return Layout(tuple(k for k, _ in items), tuple(tuple(v.shape) for _, v in items), tuple(v.dtype for _, v in items))


def flatten(state: dict[str, torch.Tensor], layout: Layout) -> np.ndarray:
    """The float entries of `state` as one float32 vector."""
    if not layout.names:
        return np.zeros(0, dtype=np.float32)
    parts = [state[name].detach().cpu().reshape(-1).to(torch.float32) for name in layout.names]
    return torch.cat(parts).numpy().astype(np.float32, copy=False)


def unflatten(vector: np.ndarray, layout: Layout) -> OrderedDict[str, torch.Tensor]:
    """Inverse of `flatten`: tensors with the layout's shapes and dtypes."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    offset = 0
    flat = torch.from_numpy(np.ascontiguousarray(vector, dtype=np.float32))
    for name, shape, dtype in zip(layout.names, layout.shapes, layout.dtypes):
        n = int(np.prod(shape))
        out[name] = flat[offset : offset + n].reshape(shape).to(dtype).clone()
        offset += n
    return out


def integer_entries(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Non-float entries (counters), sent as they are."""
    return {k: v.detach().cpu().numpy() for k, v in state.items() if not torch.is_floating_point(v)}


def encode(vector: np.ndarray, codec: str, *, topk_fraction: float = 0.1) -> dict[str, np.ndarray]:
    """Compress a flat update into the arrays that go on the wire."""
    if codec == "none":
        return {"delta": vector.astype(np.float32, copy=False)}
    if codec == "int8":
        n = len(vector)
        padded = np.zeros(-(-n // INT8_CHUNK) * INT8_CHUNK, dtype=np.float32)
        padded[:n] = vector
        chunks = padded.reshape(-1, INT8_CHUNK)
        scales = np.abs(chunks).max(axis=1) / 127.0
        safe = np.where(scales > 0, scales, 1.0)
        q = np.clip(np.rint(chunks / safe[:, None]), -127, 127).astype(np.int8).reshape(-1)[:n]
        # One array per message (scales then codes): each Array on the wire carries its own dtype,
        # shape and framing, which for small models costs a visible share of the int8 saving.
        head = scales.astype("<f4").view(np.uint8)
        # The codes of an update cluster near 0 (a chunk's scale is set by its largest entry), so a
        # lossless deflate of them shrinks the message further; sent only when it is smaller.
        deflated = zlib.compress(q.tobytes(), DEFLATE_LEVEL)
        if len(deflated) < n:
            return {"q8z": np.concatenate([head, np.frombuffer(deflated, dtype=np.uint8)])}
        return {"q8": np.concatenate([head, q.view(np.uint8)])}
    if codec == "topk":
        k = max(1, int(round(topk_fraction * len(vector)))) if len(vector) else 0
        idx = np.argpartition(np.abs(vector), len(vector) - k)[len(vector) - k :] if k else np.zeros(0, np.int64)
        idx = np.sort(idx).astype(np.int32)
        return {"idx": idx, "val": vector[idx].astype(np.float32)}
    raise ValueError(f"unknown codec {codec!r} (known: {', '.join(CODECS)})")


def decode(arrays: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Rebuild the flat float32 update from what `encode` produced (the codec is read off the keys)."""
    if "delta" in arrays:
        return np.asarray(arrays["delta"], dtype=np.float32)
    if "q8" in arrays or "q8z" in arrays:
        packed = np.asarray(arrays.get("q8", arrays.get("q8z")), dtype=np.uint8)
        n_scales = -(-size // INT8_CHUNK)
        scales = packed[: 4 * n_scales].view("<f4").astype(np.float32)
        body = packed[4 * n_scales :]
        if "q8z" in arrays:
            body = np.frombuffer(zlib.decompress(body.tobytes()), dtype=np.uint8)
        q = body[:size].view(np.int8).astype(np.float32)
        return q * np.repeat(scales, INT8_CHUNK)[:size]
    if "q" in arrays:
        q = np.asarray(arrays["q"], dtype=np.float32)
        scales = np.repeat(np.asarray(arrays["scales"], dtype=np.float32), INT8_CHUNK)[:size]
        return q * scales
    if "idx" in arrays:
        out = np.zeros(size, dtype=np.float32)
        out[np.asarray(arrays["idx"], dtype=np.int64)] = np.asarray(arrays["val"], dtype=np.float32)
        return out
    raise ValueError(f"not an encoded update (keys: {sorted(arrays)})")


def encode_with_feedback(
    vector: np.ndarray, codec: str, residual: np.ndarray | None, *, topk_fraction: float = 0.1
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Encode `vector + residual`; return the wire arrays and the new residual (what was lost)."""
    target = vector if residual is None or codec == "none" else vector + residual
    arrays = encode(target, codec, topk_fraction=topk_fraction)
    if codec == "none":
        return arrays, np.zeros_like(vector)
    return arrays, (target - decode(arrays, len(vector))).astype(np.float32)


def payload_bytes(arrays: dict[str, np.ndarray]) -> int:
    """Raw bytes of the arrays of an update (without message framing)."""
    return int(sum(np.asarray(a).nbytes for a in arrays.values()))


def deflated_bytes(arrays: dict[str, np.ndarray]) -> int:
    """What the update's arrays would take after a lossless zlib deflate (the yardstick for the
    dense baseline: deflating float32 deltas saves a few percent, deflating int8 codes more)."""
    return int(sum(len(zlib.compress(np.ascontiguousarray(a).tobytes(), 6)) for a in arrays.values()))
