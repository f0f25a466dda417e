"""Writes the small ONNX models the infer tests use into OUT_DIR (argv[1]).

- double_a.onnx, double_b.onnx: x float[N,4] -> y = 2x, n = the batch size N for every item
  (float[N,1]): the batch an item ran in is visible in its output.
- rgb_mean.onnx: images float[N,3,8,8] -> scores float[N,3], the mean of each channel
  (a "classifier" whose top class is the image's dominant colour).
- fixed1.onnx: x float[1,4] -> y = x + 1 (a fixed batch dimension of 1).
- bad.onnx: not a model at all.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper


def save(model, path):
    model.opset_import[0].version = 17
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def double(tag):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    n = helper.make_tensor_value_info("n", TensorProto.FLOAT, ["N", 1])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    starts = helper.make_tensor("starts", TensorProto.INT64, [1], [0])
    ends = helper.make_tensor("ends", TensorProto.INT64, [1], [1])
    one = helper.make_tensor("one", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["y"], name=f"mul_{tag}"),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "starts", "ends"], ["batch"]),
        helper.make_node("Cast", ["batch"], ["batch_f"], to=TensorProto.FLOAT),
        helper.make_node("Concat", ["batch", "one"], ["out_shape"], axis=0),
        helper.make_node("Expand", ["batch_f", "out_shape"], ["n"]),
    ]
    g = helper.make_graph(nodes, f"double_{tag}", [x], [y, n], [two, starts, ends, one])
    return helper.make_model(g)


def rgb_mean():
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["scores"], axis=1),
    ]
    return helper.make_model(helper.make_graph(nodes, "rgb_mean", [x], [y]))


def fixed1():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    one = helper.make_tensor("one_f", TensorProto.FLOAT, [], [1.0])
    g = helper.make_graph([helper.make_node("Add", ["x", "one_f"], ["y"])], "fixed1", [x], [y], [one])
    return helper.make_model(g)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    save(double("a"), os.path.join(out, "double_a.onnx"))
    save(double("b"), os.path.join(out, "double_b.onnx"))
    save(rgb_mean(), os.path.join(out, "rgb_mean.onnx"))
    save(fixed1(), os.path.join(out, "fixed1.onnx"))
    with open(os.path.join(out, "bad.onnx"), "wb") as f:
        f.write(b"this is not an ONNX model\x00\x01\x02" * 10)
    # Self-check with Python onnxruntime.
    import onnxruntime as ort
    s = ort.InferenceSession(os.path.join(out, "double_a.onnx"))
    y, n = s.run(None, {"x": np.ones((3, 4), np.float32)})
    assert y.shape == (3, 4) and float(y[0, 0]) == 2.0 and n.shape == (3, 1) and float(n[2, 0]) == 3.0


if __name__ == "__main__":
    main()
