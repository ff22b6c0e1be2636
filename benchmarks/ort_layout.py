"""Why SE blocks cost more under ONNX Runtime on CPU, and what an ORT-specific export buys.

    python benchmarks/ort_layout.py [--batch 8] [--rounds 40]

ONNX Runtime runs convolutions in its blocked NCHWc layout on CPU (the NchwcTransformer at
the default optimisation level). The plain ResNet-50 stays in that layout from the stem to
the final pool; an SE block takes its map back to NCHW (ReduceMean, Mul by a ``[N,C,1,1]``
scale and the broadcast Add are not NCHWc kernels) and the next block's convolution reorders
it again. This script exports se-search's ResNet-50 and SE-ResNet-50 (``standard:16``) as
``se-search export`` does, rewrites the SE export into graphs ORT can keep in NCHWc, prints
the node counts of each graph after ORT's optimisation (``ReorderInput``/``ReorderOutput``
are the layout conversions, each a full pass over a feature map), checks every rewrite
gives the same logits, and times all of them interleaved (every session once per round,
the order rotating; the median of the per-round ratios over plain ResNet-50 and its IQR,
all as ``se-search bench`` does):

- ``shipped``: the export as it is (excitation as ``Gemm``);
- ``conv``: the excitation as 1×1 ``Conv`` (NCHWc convolutions with fused activations);
- ``gap``: ``conv`` with the squeeze as ``GlobalAveragePool`` instead of ``ReduceMean``;
- ``gap+resize``: ``gap`` with the scale broadcast to the map by a nearest ``Resize`` (an
  NCHWc ``Upsample``), its output shape declared with the input's symbolic batch dimension
  so that ORT can prove the Mul's operands the same shape: no reorder left in any block.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper, shape_inference
from torch.nn import functional as F

from se_search.bench.forms import _exported, se_resnet50_pair
from se_search.bench.latency_ratios import _ratios
from se_search.costs.timing import interleaved
from se_search.models import blocks

CPU = torch.device("cpu")


def _export(model: torch.nn.Module, x: torch.Tensor, workdir: Path) -> onnx.ModelProto:
    return onnx.load(str(_exported(model.eval(), "onnx", x, workdir)))


def _constant(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    return None


def _shapes(model: onnx.ModelProto) -> dict[str, list]:
    graph = shape_inference.infer_shapes(model).graph
    infos = [*graph.value_info, *graph.input, *graph.output]
    return {
        v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim] for v in infos
    }


def rewrite(model: onnx.ModelProto, *, resize: bool) -> onnx.ModelProto:
    """ReduceMean over H, W (keepdims) as GlobalAveragePool; with ``resize``, each Mul of a
    map by a ``[N,C,1,1]`` scale as a Mul by the scale resized (nearest) to the map."""
    shapes = _shapes(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes, declared = [], []
    for node in model.graph.node:
        if node.op_type == "ReduceMean" and len(node.input) == 2:
            axes = _constant(model, node.input[1])
            keep = [a.i for a in node.attribute if a.name == "keepdims"]
            if axes is not None and sorted(int(a) % 4 for a in axes) == [2, 3] and keep != [0]:
                nodes.append(helper.make_node("GlobalAveragePool", [node.input[0]], node.output))
                continue
        if resize and node.op_type == "Mul":
            big, small = shapes.get(node.input[0]), shapes.get(node.input[1])
            if big and small and len(big) == 4 and small[2:] == [1, 1] != big[2:]:
                scales, up = node.output[0] + "_scales", node.output[0] + "_up"
                out.graph.initializer.append(
                    numpy_helper.from_array(np.array([1, 1, *big[2:]], np.float32), scales)
                )
                nodes.append(
                    helper.make_node(
                        "Resize",
                        [node.input[1], "", scales],
                        [up],
                        mode="nearest",
                        coordinate_transformation_mode="asymmetric",
                        nearest_mode="floor",
                    )
                )
                nodes.append(helper.make_node("Mul", [node.input[0], up], node.output))
                declared.append(helper.make_tensor_value_info(up, onnx.TensorProto.FLOAT, big))
                continue
        nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    del out.graph.value_info[:]
    out.graph.value_info.extend(declared)
    onnx.checker.check_model(out)
    return out


def _session(model: onnx.ModelProto, optimized: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    x = torch.randn(args.batch, 3, 224, 224)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        plain, se = se_resnet50_pair()
        graphs = {"plain": _export(plain, x, work), "shipped": _export(se, x, work)}
        shipped = blocks.PointwiseConv.forward
        blocks.PointwiseConv.forward = lambda self, v: F.conv2d(v, self.weight, self.bias)
        try:
            (work / "conv").mkdir()
            graphs["conv"] = _export(se, x, work / "conv")
        finally:
            blocks.PointwiseConv.forward = shipped
        graphs["gap"] = rewrite(graphs["conv"], resize=False)
        graphs["gap+resize"] = rewrite(graphs["conv"], resize=True)

        feed = {"images": x.numpy()}
        sessions = {}
        for name, graph in graphs.items():
            sessions[name] = _session(graph, work / f"{name}.opt.onnx")
            ops = collections.Counter(
                n.op_type for n in onnx.load(str(work / f"{name}.opt.onnx")).graph.node
            )
            print(f"{name:11s} after ORT's optimisation: {dict(sorted(ops.items()))}")
        names = list(sessions)
        reference = sessions["shipped"].run(None, feed)[0]
        for name in names[1:]:
            diff = np.abs(sessions[name].run(None, feed)[0] - reference).max()
            print(f"{name:11s} max |logits - shipped| {diff:.2e}")
            assert diff < 1e-4, name

        runners = {name: (lambda s=s: s.run(None, feed)) for name, s in sessions.items()}
        times = interleaved(runners, device=CPU, rounds=args.rounds, warmup=1)
        paired = {}  # each rewrite beside plain ResNet-50, as se-search bench pairs them
        for name in names[1:]:
            paired[(name, "onnxruntime", 0)] = times["plain"]
            paired[(name, "onnxruntime", 1)] = times[name]
        print(f"\nbatch {args.batch}, 224x224, {args.rounds} rounds, over plain ResNet-50:")
        for r in _ratios(paired, args.batch):
            print(
                f"  {r.label:11s} {r.median:.3f}  (IQR {r.q1:.3f}-{r.q3:.3f}; "
                f"{r.se_ms:.0f} against {r.plain_ms:.0f} ms)"
            )


if __name__ == "__main__":
    main()
