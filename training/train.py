"""Trains the field reader on simulator crops.

    python3 training/train.py --data training/data/train training/data/hard \
        --val training/data/val --out training/runs/main --epochs 12

Fixed seeds; CPU by default (`--device cuda` if one is there). Writes <out>/best.pt (highest
exact-match accuracy on --val) and <out>/log.jsonl.
"""
import argparse
import json
import math
import os
import random
import time

import numpy as np
import torch
import torch.nn.functional as F

import data as D
import model as M


def to_float(images_u8, device):
    return torch.from_numpy(images_u8).to(device).float().div_(255.0).unsqueeze(1)


@torch.no_grad()
def evaluate(reader, images, texts, device, batch=512):
    reader.eval()
    correct, preds = 0, []
    for s in range(0, len(texts), batch):
        ids, _ = reader.greedy(to_float(images[s:s + batch], device))
        for row, t in zip(ids.tolist(), texts[s:s + batch]):
            p = M.decode_ids(row)
            preds.append(p)
            correct += p == t
    reader.train()
    return correct / max(1, len(texts)), preds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--val", nargs="+", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=float, default=12)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--max-steps", type=int, default=0, help="stop early (pipeline smoke test)")
    ap.add_argument("--val-limit", type=int, default=4000)
    a = ap.parse_args()

    random.seed(a.seed)
    np.random.seed(a.seed)
    torch.manual_seed(a.seed)
    if a.threads:
        torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    dev = torch.device(a.device)

    images, texts, _ = D.load_dirs(a.data)
    inp, tgt = D.tokens(texts)
    vimages, vtexts, _ = D.load_dirs(a.val)
    vimages, vtexts = vimages[:a.val_limit], vtexts[:a.val_limit]
    print(f"train {len(texts)} crops, val {len(vtexts)} crops", flush=True)

    cfg = M.Config()
    reader = M.Reader(cfg).to(dev)
    print(f"parameters {M.param_count(reader)}", flush=True)
    decay = [p for n, p in reader.named_parameters() if p.dim() >= 2 and "pos" not in n]
    no_decay = [p for n, p in reader.named_parameters() if not (p.dim() >= 2 and "pos" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.98))
    steps_per_epoch = math.ceil(len(texts) / a.batch)
    total = int(a.epochs * steps_per_epoch)
    if a.max_steps:
        total = min(total, a.max_steps)
    warmup = min(500, total // 10 + 1)

    def lr_at(step):
        if step < warmup:
            return a.lr * (step + 1) / warmup
        return a.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    images_t = torch.from_numpy(images)
    inp_t, tgt_t = torch.from_numpy(inp), torch.from_numpy(tgt)
    gen = torch.Generator().manual_seed(a.seed)
    log = open(os.path.join(a.out, "log.jsonl"), "a")
    best, step, t0 = -1.0, 0, time.time()
    epoch = 0
    while step < total:
        perm = torch.randperm(len(texts), generator=gen)
        run_loss, n_loss = 0.0, 0
        for s in range(0, len(perm), a.batch):
            if step >= total:
                break
            idx = perm[s:s + a.batch]
            x = images_t[idx].to(dev).float().div_(255.0).unsqueeze(1)
            ti, tt = inp_t[idx].to(dev), tgt_t[idx].to(dev)
            n = int((tt != M.PAD).sum(1).max())
            logits = reader(x, ti[:, :n])
            loss = F.cross_entropy(logits.reshape(-1, M.VOCAB), tt[:, :n].reshape(-1),
                                   ignore_index=M.PAD, label_smoothing=0.1)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(reader.parameters(), 1.0)
            opt.step()
            run_loss += loss.item()
            n_loss += 1
            step += 1
            if step % 200 == 0:
                print(f"step {step}/{total} loss {run_loss / n_loss:.4f} "
                      f"{(time.time() - t0) / step * 1000:.0f} ms/step", flush=True)
        epoch += 1
        acc, _ = evaluate(reader, vimages, vtexts, dev)
        rec = {"epoch": epoch, "step": step, "loss": run_loss / max(1, n_loss), "val_acc": acc,
               "minutes": (time.time() - t0) / 60}
        print(json.dumps(rec), flush=True)
        log.write(json.dumps(rec) + "\n")
        log.flush()
        state = {"config": cfg.to_dict(), "model": {k: v.cpu() for k, v in reader.state_dict().items()},
                 "stats": rec}
        torch.save(state, os.path.join(a.out, "last.pt"))
        if acc >= best:
            best = acc
            torch.save(state, os.path.join(a.out, "best.pt"))
    print(f"done: best val exact-match {best:.4f}, {(time.time() - t0) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
