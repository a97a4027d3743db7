"""Times training steps of the recipe (batch 128) on the CPU with N threads: the basis of the
CPU duration stated in MODEL_CARD.md.  python3 training/cpu_bench.py --threads 2"""
import argparse
import time

import torch
import torch.nn.functional as F

import model as M

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--steps", type=int, default=8)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
r = M.Reader()
opt = torch.optim.AdamW(r.parameters(), 1e-3)
x = torch.rand(128, 1, 32, 192)
t = torch.randint(3, 70, (128, 11))
times = []
for i in range(a.steps):
    t0 = time.time()
    loss = F.cross_entropy(r(x, t).reshape(-1, M.VOCAB), t.reshape(-1), label_smoothing=0.1)
    opt.zero_grad()
    loss.backward()
    opt.step()
    times.append(time.time() - t0)
steady = sorted(times[2:])[len(times[2:]) // 2]
print(f"CPU_BENCH threads={a.threads} median_s_per_step={steady:.3f}", flush=True)
