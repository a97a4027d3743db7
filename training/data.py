"""Loads simulator crop folders (crops/<n>.png + labels.jsonl) into uint8 arrays, cached as
data.npz beside labels.jsonl so a second run skips the PNG decoding."""
import json
import os

import numpy as np
from PIL import Image

import model as M


def load_dir(path, fields=None):
    """-> (images uint8 [N,32,192], texts list[str], meta list[dict])."""
    cache = os.path.join(path, "data.npz")
    labels = os.path.join(path, "labels.jsonl")
    with open(labels) as f:
        meta = [json.loads(line) for line in f if line.strip()]
    if os.path.exists(cache) and os.path.getmtime(cache) >= os.path.getmtime(labels):
        images = np.load(cache)["images"]
    else:
        images = np.zeros((len(meta), M.CROP_H, M.CROP_W), np.uint8)
        for i, m in enumerate(meta):
            img = Image.open(os.path.join(path, m["file"])).convert("L")
            a = np.asarray(img)
            assert a.shape == (M.CROP_H, M.CROP_W), (m["file"], a.shape)
            images[i] = a
        np.savez(cache, images=images)
    # Inkless crops (all background) carry no readable text: the agent marks such a box
    # unreadable from its contrast before the model runs, so they are left out here too.
    inked = images.reshape(len(images), -1).min(axis=1) < 128
    keep = [i for i, m in enumerate(meta)
            if inked[i] and usable(m["text"]) and (fields is None or m["field"] in fields)]
    return images[keep], [meta[i]["text"] for i in keep], [meta[i] for i in keep]


def usable(text):
    return 0 < len(text) <= M.MAX_CHARS and all(c in M.CHAR_TO_ID for c in text)


def load_dirs(paths):
    ims, texts, meta = [], [], []
    for p in paths:
        a, t, m = load_dir(p)
        ims.append(a)
        texts += t
        meta += m
    return np.concatenate(ims), texts, meta


def tokens(texts):
    """-> inputs [N, 13] (BOS + chars, PAD) and targets [N, 13] (chars + EOS, PAD)."""
    n = M.MAX_CHARS + 1
    inp = np.zeros((len(texts), n), np.int64)
    tgt = np.zeros((len(texts), n), np.int64)
    for i, t in enumerate(texts):
        ids = M.encode_text(t)
        inp[i, 0] = M.BOS
        inp[i, 1:len(ids)] = ids[:-1]
        tgt[i, :len(ids)] = ids
    return inp, tgt
