"""After export + quantize: evaluates every variant through the agent's own tract path
(agent/tests/model_eval.rs), picks the one to ship, calibrates its confidence, rewrites
models/{encoder,decoder}.onnx + model.json + reference/, and writes models/MODEL_CARD.md.

    python3 training/study.py --run training/runs/main --data training/data [--real DIR]
"""
import argparse
import json
import math
import os
import re
import shutil
import subprocess
import time

import numpy as np
import torch

import export as E
import model as M

SETS = ["val", "val_hard", "calib"]


def tract_eval(model_dir, crops, out=None, limit=None, unconstrained=False):
    env = dict(os.environ, EXAMLINK_MODEL_DIR=os.path.abspath(model_dir), EXAMLINK_CROPS=os.path.abspath(crops))
    if out:
        env["EXAMLINK_EVAL_OUT"] = os.path.abspath(out)
    if limit:
        env["EXAMLINK_LIMIT"] = str(limit)
    if unconstrained:
        env["EXAMLINK_UNCONSTRAINED"] = "1"
    # Dev profile: the workspace builds every dependency (tract) at opt-level 3 there.
    # EXAMLINK_EVAL_MANIFEST points at another Cargo.toml holding an `agent` lib (a scratch copy).
    where = ["--manifest-path", os.environ["EXAMLINK_EVAL_MANIFEST"]] if os.environ.get("EXAMLINK_EVAL_MANIFEST") else ["-p", "agent"]
    r = subprocess.run(["cargo", "test", "-q", *where, "--test", "model_eval", "--",
                        "--ignored", "--nocapture"], env=env, capture_output=True, text=True)
    m = re.search(r"EVAL n=(\d+) acc=([\d.]+) ms_per_batch=([\d.]+) ms_per_crop=([\d.]+)", r.stdout)
    if not m:
        raise RuntimeError(f"model_eval failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return {"n": int(m[1]), "acc": float(m[2]), "ms_per_export": float(m[3]), "ms_per_crop": float(m[4])}


def fit_platt(p, ok, iters=50, l2=1e-3):
    """confidence = sigmoid(a * logit(p) + b), fitted by Newton's method on log loss."""
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    z = np.log(p / (1 - p))
    y = np.asarray(ok, np.float64)
    w = np.array([1.0, 0.0])
    X = np.stack([z, np.ones_like(z)], 1)
    for _ in range(iters):
        q = 1 / (1 + np.exp(-(X @ w)))
        g = X.T @ (q - y) + l2 * w
        H = (X * (q * (1 - q))[:, None]).T @ X + l2 * np.eye(2)
        w -= np.linalg.solve(H, g)
    return float(w[0]), float(w[1])


def reliability(conf, ok, bins=(0, 0.5, 0.8, 0.9, 0.95, 0.99, 1.0001)):
    conf, ok = np.asarray(conf), np.asarray(ok, np.float64)
    rows = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (conf >= lo) & (conf < hi)
        if sel.any():
            rows.append((lo, min(hi, 1.0), int(sel.sum()), float(conf[sel].mean()), float(ok[sel].mean())))
    return rows


def sha(path):
    import hashlib
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="training/runs/main")
    ap.add_argument("--data", default="training/data")
    ap.add_argument("--real", default=None, help="real crops folder (labels.jsonl), held out")
    ap.add_argument("--models", default="models")
    ap.add_argument("--speed-limit", type=int, default=360, help="crops timed per variant")
    ap.add_argument("--ship", default=None, help="ship this variant (e.g. after timing on an idle CPU)")
    ap.add_argument("--reuse", action="store_true", help="reuse <run>/study.json instead of re-evaluating")
    a = ap.parse_args()
    variants = {"float32": a.models}
    qdir = os.path.join(a.run, "quant")
    for v in sorted(os.listdir(qdir)) if os.path.isdir(qdir) else []:
        variants[v] = os.path.join(qdir, v)
    real = a.real or next((d for d in ["training/data/real"] if os.path.exists(os.path.join(d, "labels.jsonl"))), None)
    sets = [s for s in SETS if os.path.exists(os.path.join(a.data, s, "labels.jsonl"))] + (["real"] if real else [])
    results = json.load(open(os.path.join(a.run, "study.json"))) if a.reuse else {}
    for v, d in variants.items():
        if v in results:
            continue
        man = json.load(open(os.path.join(d, "model.json")))
        man["variant"] = v if v == "float32" else f"int8-{v}"
        man["ignore_value_info"] = v == "dynamic"
        json.dump(man, open(os.path.join(d, "model.json"), "w"), indent=1)
        res = {"size": sum(os.path.getsize(os.path.join(d, f)) for f in ("encoder.onnx", "decoder.onnx"))}
        try:
            res["speed"] = tract_eval(d, os.path.join(a.data, "val"), limit=a.speed_limit)
            for s in sets:
                crops = real if s == "real" else os.path.join(a.data, s)
                res[s] = tract_eval(d, crops, out=os.path.join(a.run, f"pred_{v}_{s}.jsonl"))
        except RuntimeError as e:
            res["error"] = str(e)[-500:]
        results[v] = res
        print(v, json.dumps(res), flush=True)
    json.dump(results, open(os.path.join(a.run, "study.json"), "w"), indent=1)

    # Ship: the fastest int8 form that loses no accuracy on the held-out sets, else float.
    base = results["float32"]

    def no_loss(r):
        return "error" not in r and all(r[s]["acc"] >= base[s]["acc"] - 0.001 for s in sets)

    ok = [v for v in variants if v != "float32" and no_loss(results[v])
          and results[v]["speed"]["ms_per_export"] <= base["speed"]["ms_per_export"] * 1.02]
    ship = min(ok, key=lambda v: results[v]["speed"]["ms_per_export"]) if ok else "float32"
    ship = a.ship or ship
    print("ship", ship, flush=True)
    if ship != "float32":
        for f in ("encoder.onnx", "decoder.onnx", "model.json"):
            shutil.copy(os.path.join(variants[ship], f), os.path.join(a.models, f))

    # Calibration on the calib set (hard, held out from training and selection).
    preds = [json.loads(l) for l in open(os.path.join(a.run, f"pred_{ship}_calib.jsonl"))]
    ca, cb = fit_platt([p["confidence"] for p in preds], [p["ok"] for p in preds])
    man = json.load(open(os.path.join(a.models, "model.json")))
    man["calibration"] = {"a": round(ca, 4), "b": round(cb, 4)}
    json.dump(man, open(os.path.join(a.models, "model.json"), "w"), indent=1)
    open(os.path.join(a.models, "model.json"), "a").write("\n")

    # References of the shipped graphs (onnxruntime) for the tract parity test.
    reader, state = E.load(os.path.join(a.run, "best.pt"))
    E.write_reference(os.path.join(a.models, "encoder.onnx"), os.path.join(a.models, "decoder.onnx"),
                      reader.cfg, os.path.join(a.models, "reference"))
    calibrated = {}
    for s in sets:
        crops = real if s == "real" else os.path.join(a.data, s)
        calibrated[s] = tract_eval(a.models, crops, out=os.path.join(a.run, f"pred_shipped_{s}.jsonl"))
    json.dump({"ship": ship, "calibration": [ca, cb], "results": results, "shipped": calibrated,
               "params": M.param_count(reader), "train_stats": state.get("stats")},
              open(os.path.join(a.run, "summary.json"), "w"), indent=1)
    import card
    card.write(a.run, a.models, sets)


if __name__ == "__main__":
    main()
