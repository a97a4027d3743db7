"""int8 forms of the exported float graphs, for the tract speed/accuracy study.

Variants (each writes <out>/<variant>/{encoder,decoder}.onnx):
- dynamic:     onnxruntime quantize_dynamic on the weight MatMuls (MatMulInteger +
               DynamicQuantizeLinear; tract needs with_ignore_value_info(true)).
- static:      per-tensor static activation scales from calibration crops, QOperator format
               (QLinearMatMul) on the weight MatMuls only; activation x activation products
               (attention) stay float.
- weights:     weight-only int8: each weight matrix stored as int8 + per-column scale behind a
               DequantizeLinear; tract folds it back to float at load, so speed is float's and
               the files are ~4x smaller.

    python3 training/quantize.py --float models --calib training/data/val --out training/runs/quant
"""
import argparse
import os
import shutil

import numpy as np
import onnx
from onnx import numpy_helper, helper, TensorProto

import data as D
import model as M


def weight_matmuls(m):
    inits = {i.name for i in m.graph.initializer}
    return [n for n in m.graph.node if n.op_type == "MatMul" and n.input[1] in inits]


def dynamic(src, dst):
    from onnxruntime.quantization import quantize_dynamic, QuantType
    m = onnx.load(src)
    nodes = [n.name for n in weight_matmuls(m)]
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, nodes_to_quantize=nodes,
                     op_types_to_quantize=["MatMul"], extra_options={"MatMulConstBOnly": True})


def weights_only(src, dst):
    """int8 symmetric per-output-column weights + DequantizeLinear(axis=1)."""
    m = onnx.load(src)
    inits = {i.name: i for i in m.graph.initializer}
    done = set()
    new_nodes = []
    for n in weight_matmuls(m):
        name = n.input[1]
        if name in done:
            continue
        done.add(name)
        w = numpy_helper.to_array(inits[name]).astype(np.float32)  # [K, N]
        scale = np.maximum(np.abs(w).max(axis=0), 1e-8) / 127.0
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        m.graph.initializer.remove(inits[name])
        m.graph.initializer.extend([
            numpy_helper.from_array(q, name + "_q"),
            numpy_helper.from_array(scale.astype(np.float32), name + "_scale"),
            numpy_helper.from_array(np.zeros_like(q[0]), name + "_zp"),
        ])
        new_nodes.append(helper.make_node("DequantizeLinear", [name + "_q", name + "_scale", name + "_zp"],
                                          [name], name=name + "_dq", axis=1))
    nodes = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(new_nodes + nodes)
    onnx.checker.check_model(m)
    onnx.save(m, dst)


class Feeds:
    """Calibration data reader over a list of feed dicts."""

    def __init__(self, feeds):
        self.it = iter(feeds)

    def get_next(self):
        return next(self.it, None)

    def rewind(self):
        pass


def calibration_feeds(enc_path, dec_path, images):
    """Encoder feeds, and decoder feeds from float greedy decoding of the same crops."""
    import onnxruntime as ort
    enc = ort.InferenceSession(enc_path, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(dec_path, providers=["CPUExecutionProvider"])
    enc_feeds, dec_feeds = [], []
    for s in range(0, len(images), 18):
        x = images[s:s + 18].astype(np.float32)[:, None] / 255.0
        enc_feeds.append({"image": x})
        ck, cv = enc.run(None, {"image": x})
        b = x.shape[0]
        sk = np.zeros((ck.shape[0], b, ck.shape[2], 0, ck.shape[4]), np.float32)
        sv = sk.copy()
        tok = np.full((b,), M.BOS, np.int64)
        for pos in range(M.MAX_CHARS + 1):
            feed = {"token": tok, "position": np.array([pos], np.int64), "self_k": sk, "self_v": sv,
                    "cross_k": ck, "cross_v": cv}
            dec_feeds.append(feed)
            logits, sk, sv = dec.run(None, feed)
            tok = logits.argmax(-1).astype(np.int64)
            if (tok == M.EOS).all():
                break
    return enc_feeds, dec_feeds


def static(src, dst, feeds):
    from onnxruntime.quantization import quantize_static, QuantFormat, QuantType, CalibrationMethod
    m = onnx.load(src)
    nodes = [n.name for n in weight_matmuls(m)]
    quantize_static(src, dst, Feeds(feeds), quant_format=QuantFormat.QOperator,
                    op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes, per_channel=False,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--float", default="models", help="folder with the float encoder/decoder")
    ap.add_argument("--calib", nargs="+", required=True)
    ap.add_argument("--calib-count", type=int, default=360)
    ap.add_argument("--out", required=True)
    ap.add_argument("--variants", nargs="+", default=["dynamic", "static", "weights"])
    a = ap.parse_args()
    enc, dec = (os.path.join(a.float, f) for f in ("encoder.onnx", "decoder.onnx"))
    feeds = None
    for v in a.variants:
        out = os.path.join(a.out, v)
        os.makedirs(out, exist_ok=True)
        shutil.copy(os.path.join(a.float, "model.json"), out)
        if v == "dynamic":
            dynamic(enc, os.path.join(out, "encoder.onnx"))
            dynamic(dec, os.path.join(out, "decoder.onnx"))
        elif v == "weights":
            weights_only(enc, os.path.join(out, "encoder.onnx"))
            weights_only(dec, os.path.join(out, "decoder.onnx"))
        elif v == "static":
            if feeds is None:
                images, _, _ = D.load_dirs(a.calib)
                rng = np.random.default_rng(0)
                idx = rng.choice(len(images), min(a.calib_count, len(images)), replace=False)
                feeds = calibration_feeds(enc, dec, images[np.sort(idx)])
            static(enc, os.path.join(out, "encoder.onnx"), feeds[0])
            static(dec, os.path.join(out, "decoder.onnx"), feeds[1])
        print(v, {f: os.path.getsize(os.path.join(out, f)) for f in ("encoder.onnx", "decoder.onnx")})


if __name__ == "__main__":
    main()
