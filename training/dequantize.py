"""Float form of the shipped int8-weights graphs, for the int8-vs-float benchmark.

The shipped model stores each weight matrix as int8 + per-column scale behind a
DequantizeLinear node (see quantize.py, variant `weights`). This folds every DequantizeLinear
whose inputs are all constants back into a float32 initializer, giving graphs with the same
weights as float tensors (what the int8 file decodes to). It does not recover the
pre-quantization float weights: the accuracy of those is on the model card.

    python3 training/dequantize.py --model models --out /var/tmp/examlink-float

Needs only `onnx` and `numpy` (pinned in requirements.txt).
"""
import argparse
import json
import os
import shutil

import numpy as np
import onnx
from onnx import numpy_helper


def fold(src, dst):
    m = onnx.load(src)
    inits = {i.name: i for i in m.graph.initializer}
    keep = []
    folded = 0
    for n in m.graph.node:
        if n.op_type == "DequantizeLinear" and all(i in inits for i in n.input if i):
            q = numpy_helper.to_array(inits[n.input[0]]).astype(np.float32)
            scale = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
            zp = (numpy_helper.to_array(inits[n.input[2]]).astype(np.float32)
                  if len(n.input) > 2 and n.input[2] else np.zeros_like(scale))
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            if scale.ndim == 1 and q.ndim > 1:
                shape = [1] * q.ndim
                shape[axis] = -1
                scale, zp = scale.reshape(shape), zp.reshape(shape)
            w = ((q - zp) * scale).astype(np.float32)
            m.graph.initializer.append(numpy_helper.from_array(w, n.output[0]))
            folded += 1
        else:
            keep.append(n)
    del m.graph.node[:]
    m.graph.node.extend(keep)
    used = {i for n in m.graph.node for i in n.input} | {o.name for o in m.graph.output}
    unused = [i for i in m.graph.initializer if i.name not in used]
    for i in unused:
        m.graph.initializer.remove(i)
    onnx.checker.check_model(m)
    onnx.save(m, dst)
    return folded


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for f in ("encoder.onnx", "decoder.onnx"):
        n = fold(os.path.join(a.model, f), os.path.join(a.out, f))
        print(f"{f}: folded {n} DequantizeLinear nodes")
    spec = json.load(open(os.path.join(a.model, "model.json")))
    spec["variant"] = "float32"
    json.dump(spec, open(os.path.join(a.out, "model.json"), "w"), indent=1)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
