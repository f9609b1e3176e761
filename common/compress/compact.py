"""Shrink a deployed ONNX file without changing what it computes.

Why this exists: below a few hundred thousand parameters, an INT8 file is not mostly weights. In a
QDQ graph every quantized tensor adds a QuantizeLinear/DequantizeLinear pair, a scale and a zero point,
and the exporter's value names (`/enc2/enc2.1/Conv_output_0_DequantizeLinear_Output`, written once
per producer and once per consumer) cost more bytes than a small conv's int8 kernel. Measured on the
vertical models (tiny configs), names and node records were 10-20 % of the INT8 file, and on the fraud
model (10 K parameters, 350 nodes) more than half of it.

What `compact_onnx` does, all of it lossless for inference:
- renames every internal value to a short base-36 id (graph inputs and outputs keep their names, so
  callers feed and read the same names), drops node names, doc strings, per-node metadata and
  intermediate shape annotations (ONNX Runtime infers shapes when it loads the model), and the
  exporter's graph-level metadata (torch.export's graph signature as text: 8 % of the fraud model's
  fp32 file, 3 % of the defect model's);
- merges initializers with identical type, shape and bytes (ORT's quantizer writes one scalar scale and
  zero point per Q/DQ pair, many of them equal);
- drops node attributes equal to their ONNX schema default, Conv's implicit ones (unit strides and
  dilations, zero pads, `kernel_shape` taken from the weight), and opset imports no node uses;
- drops all-zero zero points of DequantizeLinear nodes that read an int8 weight initializer (symmetric
  int8 weights: the spec's default zero point is 0 of the input's type).

Apply it to both the fp32 and the INT8 file so their size ratio compares weights with weights.
Node names are gone afterwards: do sensitivity analysis and anything else that names nodes before.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

_CONV_ONES = ("strides", "dilations")


def _short(i: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        i, r = divmod(i, 36)
        out = digits[r] + out
        if i == 0:
            return out


def _schema_defaults(op_type: str, domain: str, opset: int) -> dict:
    from onnx import defs, helper

    try:
        schema = defs.get_schema(op_type, opset, domain)
    except Exception:  # noqa: BLE001 - an op ONNX does not know (e.g. com.microsoft): keep its attributes
        return {}
    return {
        name: helper.get_attribute_value(attr.default_value)
        for name, attr in schema.attributes.items()
        if attr.default_value.type
    }


def _drop_default_attrs(node, defaults: dict, weight_dims: dict[str, list[int]]) -> None:
    from onnx import helper

    keep = []
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if attr.name in defaults and value == defaults[attr.name]:
            continue
        if node.op_type in ("Conv", "ConvTranspose"):
            if attr.name in _CONV_ONES and all(v == 1 for v in attr.ints):
                continue
            if attr.name == "pads" and all(v == 0 for v in attr.ints):
                continue
            if attr.name == "kernel_shape" and len(node.input) > 1:
                dims = weight_dims.get(node.input[1])
                if dims is not None and list(dims[2:]) == list(attr.ints):
                    continue
        keep.append(attr)
    if len(keep) != len(node.attribute):
        del node.attribute[:]
        node.attribute.extend(keep)


def compact_onnx(path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Rewrite the ONNX file at `path` (or to `out`) in its compact, inference-equivalent form."""
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    out = Path(out) if out is not None else path
    model = onnx.load(str(path))
    graph = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        onnx.save(model, str(out))  # control-flow subgraphs capture outer names: leave such graphs alone
        return out

    # 1. identical initializers -> one
    canonical: dict[tuple, str] = {}
    alias: dict[str, str] = {}
    unique = []
    for tensor in graph.initializer:
        array = numpy_helper.to_array(tensor)
        key = (tensor.data_type, tuple(tensor.dims), array.tobytes())
        if key in canonical:
            alias[tensor.name] = canonical[key]
        else:
            canonical[key] = tensor.name
            unique.append(tensor)
    inits = {t.name: t for t in unique}
    weight_dims = {t.name: list(t.dims) for t in unique}
    for node in graph.node:  # a QDQ conv reads its weight through a DequantizeLinear: same shape
        if node.op_type == "DequantizeLinear" and alias.get(node.input[0], node.input[0]) in weight_dims:
            weight_dims[node.output[0]] = weight_dims[alias.get(node.input[0], node.input[0])]

    # 2. weight DequantizeLinear with an all-zero int8 zero point: drop the zero point
    int8 = onnx.TensorProto.INT8
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    cache: dict[tuple[str, str], dict] = {}
    for node in graph.node:
        node.input[:] = [alias.get(x, x) for x in node.input]
        domain = node.domain or "ai.onnx"
        if (node.op_type, domain) not in cache:
            cache[node.op_type, domain] = _schema_defaults(node.op_type, node.domain, opsets.get(domain, 1))
        _drop_default_attrs(node, cache[node.op_type, domain], weight_dims)
        if node.op_type == "DequantizeLinear" and len(node.input) == 3 and node.input[0] in inits:
            zero = inits.get(node.input[2])
            if zero is not None and zero.data_type == int8 and not np.any(numpy_helper.to_array(zero)):
                del node.input[2]
    used = {x for n in graph.node for x in n.input} | {o.name for o in graph.output}
    del graph.initializer[:]
    graph.initializer.extend(t for t in unique if t.name in used)

    # 3. short names for every internal value; node names, doc strings, metadata and value_info go
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in names:
            names[name] = _short(len(names))
        return names[name]

    for tensor in graph.initializer:
        tensor.name = short(tensor.name)
        tensor.ClearField("doc_string")  # proto2: an empty string is still written; a cleared one is not
    for node in graph.node:
        node.input[:] = [short(x) for x in node.input]
        node.output[:] = [short(x) for x in node.output]
        for name in ("name", "doc_string", "metadata_props"):
            node.ClearField(name)
    del graph.value_info[:]
    graph.ClearField("doc_string")
    # the dynamo exporter writes torch.export's graph signature as text into the graph's metadata (one
    # line per parameter and buffer: 4.3 KB of the 53 KB fraud model, 11 KB of the defect model) and
    # tags each graph input/output; ONNX Runtime reads none of it. Model-level metadata (ours) stays.
    graph.ClearField("metadata_props")
    for value in (*graph.input, *graph.output):
        value.ClearField("metadata_props")
        value.ClearField("doc_string")
    domains = {n.domain or "ai.onnx" for n in graph.node} | {"ai.onnx"}
    imports = [o for o in model.opset_import if (o.domain or "ai.onnx") in domains]
    del model.opset_import[:]
    model.opset_import.extend(imports)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out


def size_breakdown(path: str | os.PathLike[str]) -> dict[str, int]:
    """Where an ONNX file's bytes go: tensor data by type, and everything else (nodes, names, headers).

    `float` in an INT8 file is what stays fp32: per-channel scales, fp32 biases and the tensors of
    nodes kept fp32 by the sensitivity search.
    """
    import onnx
    from onnx import numpy_helper

    from common.export import onnx_size_bytes

    model = onnx.load(str(path))
    out: dict[str, int] = {}
    for tensor in model.graph.initializer:
        kind = onnx.TensorProto.DataType.Name(tensor.data_type).lower()
        out[kind] = out.get(kind, 0) + int(numpy_helper.to_array(tensor).nbytes)
    out["graph"] = onnx_size_bytes(path) - sum(out.values())
    out["nodes"] = len(model.graph.node)
    out["float_tensors"] = sum(t.data_type == onnx.TensorProto.FLOAT for t in model.graph.initializer)
    return out
