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
from functools import cached_property

import numpy as np
import torch

CODECS = ("none", "int8", "topk")
INT8_CHUNK = 4096
DEFLATE_LEVEL = 9


def int8_raw_bytes(size: int, chunks: int | None = None, exact: int = 0) -> int:
    """Payload of an int8-encoded update of `size` values in `chunks` chunks (default: `size` cut
    every INT8_CHUNK values) before the lossless deflate: one float32 scale per chunk, one code per
    value, and 4 bytes for each of the `exact` values sent as float32."""
    return 4 * (-(-size // INT8_CHUNK) if chunks is None else chunks) + size + 4 * exact


def chunk_starts(sizes: list[int] | tuple[int, ...], shared: list[bool] | tuple[bool, ...] | None = None) -> np.ndarray:
    """Start offsets of the int8 chunks (one scale each) of a flat vector made of tensors of `sizes`.

    Consecutive tensors marked `shared` (trained parameters) share chunks, cut every INT8_CHUNK
    values: Adam moves every parameter by steps of about the same size, so one scale fits them all.
    Every other tensor (a buffer: BatchNorm running moments, fitted input statistics, thresholds)
    gets chunks of its own: a running variance moves by about 1 in a round while a conv weight moves
    by about 0.01, and under a scale set by the variance the weight's change rounds to zero
    (measured on the manufacturing model: one code in six was 0 with chunks cut across tensors).
    """
    shared = [True] * len(sizes) if shared is None else list(shared)
    starts: list[int] = []
    offset, run_start = 0, None
    for n, joins in zip(sizes, shared):
        n = int(n)
        if joins:
            if run_start is None:
                run_start = offset
            starts.extend(s for s in range(run_start, offset + n, INT8_CHUNK) if s >= offset)
        else:
            run_start = None
            starts.extend(range(offset, offset + n, INT8_CHUNK))
        offset += n
    return np.asarray(starts, dtype=np.int64)


@dataclass(frozen=True)
class Layout:
    """Names, shapes and dtypes of the floating-point entries of a state_dict, in order."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]
    trained: tuple[bool, ...] = ()  # per entry: a trained parameter (True) or a buffer (False)

    @cached_property
    def slices(self) -> dict[str, slice]:
        """Where each entry sits in the flat vector."""
        out, offset = {}, 0
        for name, shape in zip(self.names, self.shapes):
            n = int(np.prod(shape))
            out[name] = slice(offset, offset + n)
            offset += n
        return out

    @property
    def size(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.shapes))

    @cached_property
    def exact(self) -> np.ndarray:
        """Flat indices of the buffers' values, which the int8 codec sends as float32 (see encode)."""
        flags = self.trained or (True,) * len(self.names)
        parts = [np.arange(self.slices[n].start, self.slices[n].stop) for n, t in zip(self.names, flags) if not t]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    @cached_property
    def int8_chunks(self) -> np.ndarray:
        """Start offsets of the int8 codec's chunks over this layout's flat vector (see chunk_starts)."""
        return chunk_starts([int(np.prod(s)) for s in self.shapes], self.trained or None)


def layout_of(state: dict[str, torch.Tensor], parameters: set[str] | None = None) -> Layout:
    """The float entries of `state` (integer buffers such as BatchNorm counters travel separately).

    `parameters`: the names of the trained parameters among them (the int8 codec gives buffers chunks
    of their own); None treats every entry as a parameter.
    """
    items = [(k, v) for k, v in state.items() if torch.is_floating_point(v)]
    trained = tuple(parameters is None or k in parameters for k, _ in items)
    return Layout(
        tuple(k for k, _ in items), tuple(tuple(v.shape) for _, v in items), tuple(v.dtype for _, v in items), trained
    )


def model_layout(model: torch.nn.Module) -> Layout:
    """The layout of `model`'s state, its trained parameters told apart from its buffers: the hub and
    every site call this, so both cut the int8 chunks and pick the exact (buffer) indices alike."""
    return layout_of(model.state_dict(), {n for n, _ in model.named_parameters()})


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


def _int8_scales(n: int, starts: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(chunk starts, chunk lengths) of a flat vector of `n` values; by default cut every INT8_CHUNK."""
    starts = np.arange(0, n, INT8_CHUNK, dtype=np.int64) if starts is None else np.asarray(starts, dtype=np.int64)
    return starts, np.diff(np.append(starts, n))


def encode(
    vector: np.ndarray,
    codec: str,
    *,
    topk_fraction: float = 0.1,
    starts: np.ndarray | None = None,
    exact: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Compress a flat update into the arrays that go on the wire.

    int8 only: `starts` is where each chunk with its own scale begins (`Layout.int8_chunks`, so no
    chunk mixes a buffer with weights) and `exact` the indices sent as float32 after the codes
    (`Layout.exact`: the buffers, a few hundred values of data statistics, where a rounding to 0 of a
    small std would divide by zero at every site); the receiver decodes with the same two.
    """
    if codec == "none":
        return {"delta": vector.astype(np.float32, copy=False)}
    if codec == "int8":
        n = len(vector)
        starts, lengths = _int8_scales(n, starts)
        vector = np.array(vector, dtype=np.float32)
        kept = vector[exact].astype("<f4") if exact is not None and len(exact) else np.zeros(0, "<f4")
        if len(kept):
            vector[exact] = 0.0
        scales = (np.maximum.reduceat(np.abs(vector), starts) if n else np.zeros(0, np.float32)) / 127.0
        safe = np.repeat(np.where(scales > 0, scales, 1.0), lengths)
        q = np.clip(np.rint(vector / safe), -127, 127).astype(np.int8)
        # One array per message (scales then codes): each Array on the wire carries its own dtype,
        # shape and framing, which for small models costs a visible share of the int8 saving.
        head = scales.astype("<f4").view(np.uint8)
        # The codes of an update cluster near 0 (a chunk's scale is set by its largest entry), so a
        # lossless deflate of them shrinks the message further; sent only when it is smaller.
        body = q.tobytes() + kept.tobytes()
        deflated = zlib.compress(body, DEFLATE_LEVEL)
        if len(deflated) < len(body):
            return {"q8z": np.concatenate([head, np.frombuffer(deflated, dtype=np.uint8)])}
        return {"q8": np.concatenate([head, np.frombuffer(body, dtype=np.uint8)])}
    if codec == "topk":
        k = max(1, int(round(topk_fraction * len(vector)))) if len(vector) else 0
        idx = np.argpartition(np.abs(vector), len(vector) - k)[len(vector) - k :] if k else np.zeros(0, np.int64)
        idx = np.sort(idx).astype(np.int32)
        return {"idx": idx, "val": vector[idx].astype(np.float32)}
    raise ValueError(f"unknown codec {codec!r} (known: {', '.join(CODECS)})")


def decode(
    arrays: dict[str, np.ndarray], size: int, starts: np.ndarray | None = None, exact: np.ndarray | None = None
) -> np.ndarray:
    """Rebuild the flat float32 update from what `encode` produced (the codec is read off the keys;
    int8 needs the same chunk `starts` and `exact` indices the sender used)."""
    if "delta" in arrays:
        return np.asarray(arrays["delta"], dtype=np.float32)
    if "q8" in arrays or "q8z" in arrays:
        packed = np.asarray(arrays.get("q8", arrays.get("q8z")), dtype=np.uint8)
        starts, lengths = _int8_scales(size, starts)
        n_scales = len(starts)
        scales = packed[: 4 * n_scales].view("<f4").astype(np.float32)
        body = packed[4 * n_scales :]
        if "q8z" in arrays:
            body = np.frombuffer(zlib.decompress(body.tobytes()), dtype=np.uint8)
        q = body[:size].view(np.int8).astype(np.float32)
        out = q * np.repeat(scales, lengths)
        if exact is not None and len(exact):
            out[exact] = body[size : size + 4 * len(exact)].view("<f4")
        return out
    if "idx" in arrays:
        out = np.zeros(size, dtype=np.float32)
        out[np.asarray(arrays["idx"], dtype=np.int64)] = np.asarray(arrays["val"], dtype=np.float32)
        return out
    raise ValueError(f"not an encoded update (keys: {sorted(arrays)})")


def encode_with_feedback(
    vector: np.ndarray,
    codec: str,
    residual: np.ndarray | None,
    *,
    topk_fraction: float = 0.1,
    starts: np.ndarray | None = None,
    exact: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Encode `vector + residual`; return the wire arrays and the new residual (what was lost)."""
    target = vector if residual is None or codec == "none" else vector + residual
    arrays = encode(target, codec, topk_fraction=topk_fraction, starts=starts, exact=exact)
    if codec == "none":
        return arrays, np.zeros_like(vector)
    return arrays, (target - decode(arrays, len(vector), starts, exact)).astype(np.float32)


def payload_bytes(arrays: dict[str, np.ndarray]) -> int:
    """Raw bytes of the arrays of an update (without message framing)."""
    return int(sum(np.asarray(a).nbytes for a in arrays.values()))


def deflated_bytes(arrays: dict[str, np.ndarray]) -> int:
    """What the update's arrays would take after a lossless zlib deflate (the yardstick for the
    dense baseline: deflating float32 deltas saves a few percent, deflating int8 codes more)."""
    return int(sum(len(zlib.compress(np.ascontiguousarray(a).tobytes(), 6)) for a in arrays.values()))
