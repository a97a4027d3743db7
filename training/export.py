"""Export a trained Reader to models/encoder.onnx + models/decoder.onnx (float) and write the
reference inputs/outputs the Rust parity test compares tract against.

    python3 training/export.py --ckpt training/runs/main/best.pt --out models
"""
import argparse
import json
import os

import numpy as np
import torch

import model as M


class EncoderGraph(torch.nn.Module):
    def __init__(self, reader):
        super().__init__()
        self.reader = reader

    def forward(self, image):
        return self.reader.cross(image)


class DecoderGraph(torch.nn.Module):
    def __init__(self, reader):
        super().__init__()
        self.reader = reader

    def forward(self, token, position, self_k, self_v, cross_k, cross_v):
        return self.reader.step(token, position, self_k, self_v, cross_k, cross_v)


def load(ckpt):
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    reader = M.Reader(M.Config(**{k: tuple(v) if k == "stem" else v for k, v in state["config"].items()}))
    reader.load_state_dict(state["model"])
    return reader.eval(), state


def export_float(reader, out_dir):
    cfg = reader.cfg
    os.makedirs(out_dir, exist_ok=True)
    enc_path = os.path.join(out_dir, "encoder.onnx")
    dec_path = os.path.join(out_dir, "decoder.onnx")
    image = torch.ones(2, 1, M.CROP_H, M.CROP_W)
    torch.onnx.export(
        EncoderGraph(reader), (image,), enc_path, dynamo=False, opset_version=17,
        input_names=["image"], output_names=["cross_k", "cross_v"],
        dynamic_axes={"image": {0: "B"}, "cross_k": {1: "B"}, "cross_v": {1: "B"}},
    )
    with torch.no_grad():
        ck, cv = reader.cross(image)
    kv = (cfg.dec_layers, 2, cfg.heads, 3, cfg.head_dim)
    args = (torch.tensor([5, 6]), torch.tensor([3]), torch.zeros(kv), torch.zeros(kv), ck, cv)
    torch.onnx.export(
        DecoderGraph(reader), args, dec_path, dynamo=False, opset_version=17,
        input_names=["token", "position", "self_k", "self_v", "cross_k", "cross_v"],
        output_names=["logits", "self_k_out", "self_v_out"],
        dynamic_axes={
            "token": {0: "B"}, "self_k": {1: "B", 3: "T"}, "self_v": {1: "B", 3: "T"},
            "cross_k": {1: "B"}, "cross_v": {1: "B"}, "logits": {0: "B"},
            "self_k_out": {1: "B", 3: "T1"}, "self_v_out": {1: "B", 3: "T1"},
        },
    )
    return enc_path, dec_path


def reference_inputs(cfg, seed=7):
    """Fixed, reproducible inputs: a 3-crop batch of bars on white, and a step at T=0 and T=2."""
    rng = np.random.default_rng(seed)
    image = np.ones((3, 1, M.CROP_H, M.CROP_W), np.float32)
    for b in range(3):
        for j in range(4 + 2 * b):
            x = 6 + 14 * j
            image[b, 0, 8:24, x:x + 3 + b] = rng.uniform(0.0, 0.3)
    return image


def write_reference(enc_path, dec_path, cfg, out_dir):
    """Runs onnxruntime on fixed inputs and writes models/reference/*.npy + index.json."""
    import onnxruntime as ort

    os.makedirs(out_dir, exist_ok=True)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    enc = ort.InferenceSession(enc_path, so, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(dec_path, so, providers=["CPUExecutionProvider"])
    image = reference_inputs(cfg)
    ck, cv = enc.run(None, {"image": image})
    files = {"image": image, "cross_k": ck, "cross_v": cv}
    b = image.shape[0]
    shape0 = (cfg.dec_layers, b, cfg.heads, 0, cfg.head_dim)
    sk = np.zeros(shape0, np.float32)
    sv = np.zeros(shape0, np.float32)
    tokens = [M.BOS, 5, 14]
    for pos, t in enumerate(tokens):
        feed = {"token": np.full((b,), t, np.int64), "position": np.array([pos], np.int64),
                "self_k": sk, "self_v": sv, "cross_k": ck, "cross_v": cv}
        logits, sk, sv = dec.run(None, feed)
        files[f"step{pos}_token"] = feed["token"]
        files[f"step{pos}_logits"] = logits
    files["step2_self_k_in"] = feed["self_k"]
    files["step2_self_v_in"] = feed["self_v"]
    files["step2_self_k_out"] = sk
    files["step2_self_v_out"] = sv
    for name, arr in files.items():
        np.save(os.path.join(out_dir, f"{name}.npy"), arr)
    with open(os.path.join(out_dir, "index.json"), "w") as f:
        json.dump({"steps": len(tokens), "tokens": tokens,
                   "shapes": {k: list(v.shape) for k, v in files.items()}}, f, indent=1)
    return files


def check_against_torch(reader, enc_path, dec_path, tol=1e-4):
    """Every output of both graphs against the PyTorch module, on fixed inputs."""
    import onnxruntime as ort

    cfg = reader.cfg
    enc = ort.InferenceSession(enc_path, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(dec_path, providers=["CPUExecutionProvider"])
    image = reference_inputs(cfg)
    ck, cv = enc.run(None, {"image": image})
    with torch.no_grad():
        tk, tv = reader.cross(torch.from_numpy(image))
    worst = max(np.abs(ck - tk.numpy()).max(), np.abs(cv - tv.numpy()).max())
    b = image.shape[0]
    shape0 = (cfg.dec_layers, b, cfg.heads, 0, cfg.head_dim)
    sk, sv = np.zeros(shape0, np.float32), np.zeros(shape0, np.float32)
    tsk, tsv = torch.zeros(shape0), torch.zeros(shape0)
    for pos, t in enumerate([M.BOS, 7, 20, 50]):
        tok = np.full((b,), t, np.int64)
        lo, sk, sv = dec.run(None, {"token": tok, "position": np.array([pos], np.int64), "self_k": sk,
                                    "self_v": sv, "cross_k": ck, "cross_v": cv})
        with torch.no_grad():
            tl, tsk, tsv = reader.step(torch.from_numpy(tok), torch.tensor([pos]), tsk, tsv, tk, tv)
        for a, bb in ((lo, tl), (sk, tsk), (sv, tsv)):
            worst = max(worst, np.abs(a - bb.numpy()).max())
    assert worst < tol, f"onnxruntime differs from torch by {worst}"
    return float(worst)


def write_manifest(cfg, out_dir, variant="float32", calibration=None, ignore_value_info=False):
    """models/model.json: what the Rust side needs (see models/README.md)."""
    manifest = {
        "format": 1, "vocab": M.CHARS, "max_chars": M.MAX_CHARS, "dec_layers": cfg.dec_layers,
        "heads": cfg.heads, "head_dim": cfg.head_dim, "enc_tokens": M.CROP_W // 4,
        "crop_h": M.CROP_H, "crop_w": M.CROP_W, "variant": variant,
        "ignore_value_info": ignore_value_info,
        "calibration": calibration or {"a": 1.0, "b": 0.0},
    }
    with open(os.path.join(out_dir, "model.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", default="models")
    a = ap.parse_args()
    reader, _ = load(a.ckpt)
    enc, dec = export_float(reader, a.out)
    print("onnxruntime vs torch max abs diff", check_against_torch(reader, enc, dec))
    write_reference(enc, dec, reader.cfg, os.path.join(a.out, "reference"))
    write_manifest(reader.cfg, a.out)


if __name__ == "__main__":
    main()
