"""The field reader: a small TrOCR-style encoder-decoder over 32x192 field crops.

Contract with the Rust side: models/README.md. Attention is written as plain matmul + softmax
(no nn.MultiheadAttention, no scaled_dot_product_attention) so the exported ONNX graphs load
and optimise in tract-onnx 0.23. The causal mask is built from index comparisons and is only
used in training: the step decoder attends to its cache, which holds past positions only.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

CHARS = "0123456789+-.:/" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + "abcdefghijklmnopqrstuvwxyz"
PAD, BOS, EOS = 0, 1, 2
VOCAB = 3 + len(CHARS)  # 70
MAX_CHARS = 12
MAX_POS = 16
CROP_H, CROP_W = 32, 192
CHAR_TO_ID = {c: i + 3 for i, c in enumerate(CHARS)}


def encode_text(text):
    """Token ids of `text` followed by EOS (no BOS)."""
    return [CHAR_TO_ID[c] for c in text] + [EOS]


def decode_ids(ids):
    out = []
    for i in ids:
        if i == EOS:
            break
        if i >= 3:
            out.append(CHARS[i - 3])
    return "".join(out)


class Config:
    def __init__(self, d=128, heads=4, enc_layers=4, dec_layers=2, ffn=512, stem=(32, 64)):
        self.d, self.heads, self.enc_layers, self.dec_layers = d, heads, enc_layers, dec_layers
        self.ffn, self.stem = ffn, stem

    @property
    def head_dim(self):
        return self.d // self.heads

    def to_dict(self):
        return dict(d=self.d, heads=self.heads, enc_layers=self.enc_layers,
                    dec_layers=self.dec_layers, ffn=self.ffn, stem=list(self.stem))


# Export knob: every Linear runs as one 2-D MatMul over [rows, features] (rows = batch x tokens).
# Same numbers either way; the 2-D form lets tract's int8 matmul see the whole batch at once.
FLAT_LINEAR = True


class Linear(nn.Linear):
    def forward(self, x):
        if not FLAT_LINEAR or x.dim() == 2:
            return torch.matmul(x, self.weight.t()) + self.bias if x.dim() == 2 else super().forward(x)
        lead = x.shape[:-1]
        y = torch.matmul(x.reshape(-1, x.shape[-1]), self.weight.t()) + self.bias
        return y.reshape(*lead, y.shape[-1])


def split_heads(x, heads):
    """[B, N, d] -> [B, H, N, Dh]"""
    b, n, d = x.shape
    return x.reshape(b, n, heads, d // heads).transpose(1, 2)


def merge_heads(x):
    """[B, H, N, Dh] -> [B, N, d]"""
    b, h, n, dh = x.shape
    return x.transpose(1, 2).reshape(b, n, h * dh)


def attend(q, k, v, bias=None):
    """q [B,H,N,Dh], k/v [B,H,M,Dh] -> [B,H,N,Dh]; plain matmul + softmax."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if bias is not None:
        scores = scores + bias
    return torch.matmul(torch.softmax(scores, dim=-1), v)


class FFN(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.fc1 = Linear(d, hidden)
        self.fc2 = Linear(hidden, d)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class EncoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.heads = cfg.heads
        self.ln1 = nn.LayerNorm(cfg.d)
        self.qkv = Linear(cfg.d, 3 * cfg.d)
        self.proj = Linear(cfg.d, cfg.d)
        self.ln2 = nn.LayerNorm(cfg.d)
        self.ffn = FFN(cfg.d, cfg.ffn)

    def forward(self, x):
        h = self.ln1(x)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        a = attend(split_heads(q, self.heads), split_heads(k, self.heads), split_heads(v, self.heads))
        x = x + self.proj(merge_heads(a))
        return x + self.ffn(self.ln2(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.heads = cfg.heads
        self.ln1 = nn.LayerNorm(cfg.d)
        self.qkv = Linear(cfg.d, 3 * cfg.d)
        self.proj = Linear(cfg.d, cfg.d)
        self.ln2 = nn.LayerNorm(cfg.d)
        self.cq = Linear(cfg.d, cfg.d)
        self.ckv = Linear(cfg.d, 2 * cfg.d)  # applied to the encoder memory
        self.cproj = Linear(cfg.d, cfg.d)
        self.ln3 = nn.LayerNorm(cfg.d)
        self.ffn = FFN(cfg.d, cfg.ffn)

    def cross_kv(self, memory):
        k, v = self.ckv(memory).chunk(2, dim=-1)
        return split_heads(k, self.heads), split_heads(v, self.heads)

    def forward(self, x, ck, cv, bias):
        """Training / full-sequence form: x [B,N,d], causal `bias` [N,N]."""
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        a = attend(split_heads(q, self.heads), split_heads(k, self.heads), split_heads(v, self.heads), bias)
        x = x + self.proj(merge_heads(a))
        q = split_heads(self.cq(self.ln2(x)), self.heads)
        x = x + self.cproj(merge_heads(attend(q, ck, cv)))
        return x + self.ffn(self.ln3(x))

    def step(self, x, past_k, past_v, ck, cv):
        """One position: x [B,d], past [B,H,T,Dh] -> x, k [B,H,T+1,Dh], v."""
        b, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        shape = (b, self.heads, 1, d // self.heads)
        k = torch.cat([past_k, k.reshape(shape)], dim=2)
        v = torch.cat([past_v, v.reshape(shape)], dim=2)
        a = attend(q.reshape(shape), k, v)  # [B,H,1,Dh]
        x = x + self.proj(a.reshape(b, d))
        q = self.cq(self.ln2(x)).reshape(shape)
        x = x + self.cproj(attend(q, ck, cv).reshape(b, d))
        return x + self.ffn(self.ln3(x)), k, v


class Reader(nn.Module):
    def __init__(self, cfg=None):
        super().__init__()
        cfg = cfg or Config()
        self.cfg = cfg
        c1, c2 = cfg.stem
        # 32x192 -> 16x96 -> 8x48; each of the 48 columns (4 px wide) becomes one token.
        self.conv1 = nn.Conv2d(1, c1, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.patch = Linear(c2 * (CROP_H // 4), cfg.d)
        self.enc_pos = nn.Parameter(torch.randn(CROP_W // 4, cfg.d) * 0.02)
        self.enc = nn.ModuleList([EncoderLayer(cfg) for _ in range(cfg.enc_layers)])
        self.enc_ln = nn.LayerNorm(cfg.d)
        self.tok = nn.Embedding(VOCAB, cfg.d)
        self.dec_pos = nn.Parameter(torch.randn(MAX_POS, cfg.d) * 0.02)
        self.dec = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg.dec_layers)])
        self.dec_ln = nn.LayerNorm(cfg.d)
        self.head = Linear(cfg.d, VOCAB)

    def memory(self, image):
        """image [B,1,32,192] (1.0 background, 0.0 ink) -> [B,48,d]."""
        x = 1.0 - image  # ink positive, padding zero
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))  # [B,C,8,48]
        b, c, h, w = x.shape
        x = x.permute(0, 3, 1, 2).reshape(b, w, c * h)
        x = self.patch(x) + self.enc_pos
        for layer in self.enc:
            x = layer(x)
        return self.enc_ln(x)

    def cross(self, image):
        """-> cross_k, cross_v [L,B,H,S,Dh]"""
        mem = self.memory(image)
        kv = [layer.cross_kv(mem) for layer in self.dec]
        return torch.stack([k for k, _ in kv]), torch.stack([v for _, v in kv])

    def forward(self, image, tokens):
        """Teacher forcing: tokens [B,N] (BOS first) -> logits [B,N,V]."""
        ck, cv = self.cross(image)
        n = tokens.shape[1]
        idx = torch.arange(n, device=tokens.device)
        bias = (idx[None, :] > idx[:, None]).float() * -1e9  # causal, from index comparison
        x = self.tok(tokens) + self.dec_pos[:n]
        for l, layer in enumerate(self.dec):
            x = layer(x, ck[l], cv[l], bias)
        return self.head(self.dec_ln(x))

    def step(self, token, position, self_k, self_v, cross_k, cross_v):
        """The decoder.onnx graph: see models/README.md."""
        x = self.tok(token) + self.dec_pos[position]  # [B,d] + [1,d]
        ks, vs = [], []
        for l, layer in enumerate(self.dec):
            x, k, v = layer.step(x, self_k[l], self_v[l], cross_k[l], cross_v[l])
            ks.append(k)
            vs.append(v)
        return self.head(self.dec_ln(x)), torch.stack(ks), torch.stack(vs)

    @torch.no_grad()
    def greedy(self, image, allowed=None):
        """Reference greedy decoding with the step graph (optionally with an allowed-token mask
        [B,V] of bools). Returns (ids [B, <=13], probs)."""
        cfg = self.cfg
        b = image.shape[0]
        ck, cv = self.cross(image)
        shape = (cfg.dec_layers, b, cfg.heads, 0, cfg.head_dim)
        sk = torch.zeros(shape, device=image.device)
        sv = torch.zeros(shape, device=image.device)
        tok = torch.full((b,), BOS, dtype=torch.long, device=image.device)
        out, probs = [], []
        done = torch.zeros(b, dtype=torch.bool, device=image.device)
        for pos in range(MAX_CHARS + 1):
            logits, sk, sv = self.step(tok, torch.tensor([pos], device=image.device), sk, sv, ck, cv)
            if allowed is not None:
                logits = logits.masked_fill(~allowed, -1e9)
            p = torch.softmax(logits, -1)
            pm, tok = p.max(-1)
            tok = torch.where(done, torch.full_like(tok, EOS), tok)
            out.append(tok)
            probs.append(pm)
            done |= tok == EOS
            if bool(done.all()):
                break
        return torch.stack(out, 1), torch.stack(probs, 1)


def param_count(model):
    return sum(p.numel() for p in model.parameters())
