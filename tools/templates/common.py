"""Shared helpers for the template authoring tools (never run by the product).

Loading samples and labels, estimating each sample's transform relative to a reference sample,
warping a sample into the reference frame, turning a label value into the text the device prints,
and drawing text the way PIL (and the simulator) does.
"""

import glob
import json
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
DEVICES = os.environ.get("EXAMLINK_DEVICES", os.path.abspath(os.path.join(ROOT, "..", "shared", "devices")))
TEMPLATES = os.path.join(ROOT, "templates")
OUT = os.path.join(HERE, "out")  # intermediate results (json), not committed
FONT_DIRS = sorted(glob.glob("/usr/share/fonts/truetype/*")) + sorted(glob.glob("/usr/share/fonts/opentype/*"))

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def samples(layout):
    """[(stem, image path, label dict)] for a layout folder, sorted by name."""
    out = []
    for js in sorted(glob.glob(os.path.join(DEVICES, layout, "*.json"))):
        stem = os.path.splitext(os.path.basename(js))[0]
        imgs = [p for p in glob.glob(os.path.join(DEVICES, layout, stem + ".*")) if not p.endswith(".json")]
        with open(js) as f:
            out.append((stem, imgs[0], json.load(f)))
    return out


def load_rgb(path):
    """Image as float32 HxWx3 (gray, bitonal and palette images are expanded to RGB)."""
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def gray(a):
    return a if a.ndim == 2 else a @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def font_path(name):
    for d in FONT_DIRS:
        p = os.path.join(d, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(name)


_font_cache = {}


def font(name, size):
    key = (name, size)
    if key not in _font_cache:
        _font_cache[key] = ImageFont.truetype(font_path(name), size)
    return _font_cache[key]


def screen_text(value, grammar):
    """The text the device prints for a (non-null) label value."""
    if grammar.get("kind") == "date":
        y, m, d = value.split("-")
        fmt = grammar["format"]
        return fmt.replace("YYYY", y).replace("Mon", MONTHS[int(m) - 1]).replace("MM", m).replace("DD", d)
    return value


def render_alpha(text, fname, size, origin, anchor, shape, ox=0.0, oy=0.0):
    """Coverage (0..1) of text drawn by PIL ImageDraw.text at origin, in an image of `shape` (h, w).

    (ox, oy) shift the canvas origin: the text is drawn at origin - (ox, oy).
    """
    h, w = shape
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).text((origin[0] - ox, origin[1] - oy), text, font=font(fname, size), anchor=anchor, fill=255)
    return np.asarray(im, dtype=np.float32) / 255.0


def compose(bg, alpha, color):
    """Text of `color` with coverage `alpha` over background crop `bg` (HxWx3 float)."""
    c = np.asarray(color, dtype=np.float32).reshape(1, 1, -1)
    return bg * (1 - alpha[..., None]) + c * alpha[..., None]


# ---------------------------------------------------------------- transforms
# A transform maps reference-frame coordinates (x, y) to sample coordinates:
#   [xs, ys] = A @ [x, y] + t,  stored as {"A": [[a, b], [c, d]], "t": [tx, ty]}.
# For integer-shift layouts A is the identity and t the integer shift.


def tr_compose(outer, inner):
    """outer ∘ inner (apply inner first)."""
    A1, t1 = np.array(outer["A"]), np.array(outer["t"])
    A2, t2 = np.array(inner["A"]), np.array(inner["t"])
    return {"A": (A1 @ A2).tolist(), "t": (A1 @ t2 + t1).tolist()}


def tr_inverse(tr):
    A, t = np.array(tr["A"]), np.array(tr["t"])
    Ai = np.linalg.inv(A)
    return {"A": Ai.tolist(), "t": (-Ai @ t).tolist()}


def tr_params(tr):
    """(scale, rotation in degrees, tx, ty) of a similarity transform."""
    A = np.array(tr["A"])
    s = float(np.sqrt(abs(np.linalg.det(A))))
    rot = float(np.degrees(np.arctan2(A[1, 0], A[0, 0])))
    return s, rot, tr["t"][0], tr["t"][1]


def warp_to_ref(img, tr, size, resample=Image.BICUBIC, fill=None):
    """Resample a sample image into the reference frame (size = (w, h)): out(x) = img(T(x))."""
    A, t = np.array(tr["A"]), np.array(tr["t"])
    is_int = np.allclose(A, np.eye(2)) and np.allclose(t, np.round(t))
    arr = img
    if is_int:
        dx, dy = int(round(t[0])), int(round(t[1]))
        h, w = size[1], size[0]
        out = np.empty((h, w) + arr.shape[2:], dtype=arr.dtype)
        out[...] = fill if fill is not None else np.median(arr.reshape(-1, *arr.shape[2:])[:1000], axis=0)
        ys0, ys1 = max(0, -dy), min(h, arr.shape[0] - dy)
        xs0, xs1 = max(0, -dx), min(w, arr.shape[1] - dx)
        out[ys0:ys1, xs0:xs1] = arr[ys0 + dy:ys1 + dy, xs0 + dx:xs1 + dx]
        return out
    # PIL affine: out(x, y) = in(a x + b y + c, d x + e y + f)
    coeffs = (A[0, 0], A[0, 1], t[0], A[1, 0], A[1, 1], t[1])
    chans = [arr] if arr.ndim == 2 else [arr[..., i] for i in range(arr.shape[2])]
    outs = []
    for ch in chans:
        im = Image.fromarray(ch.astype(np.float32), mode="F")
        outs.append(np.asarray(im.transform(size, Image.AFFINE, coeffs, resample=resample), dtype=np.float32))
    return outs[0] if arr.ndim == 2 else np.stack(outs, axis=-1)


def save_json(name, obj):
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(obj, f, indent=1)


def load_json(name):
    with open(os.path.join(OUT, name)) as f:
        return json.load(f)


# ---------------------------------------------------------------- photometry
# Exports of some layouts vary in contrast and brightness (out = in * gain + offset). Samples are
# brought to the layout's median photometry before fitting renders and making the plate.


def photo_fit(x, y, mask=None, iters=4):
    """(gain, offset) with y ~ gain * x + offset, robust to outliers (values that differ)."""
    xs, ys = gray(x).ravel(), gray(y).ravel()
    keep = np.ones_like(xs, bool) if mask is None else mask.ravel().copy()
    keep &= np.isfinite(xs) & np.isfinite(ys)
    g, o = 1.0, 0.0
    for _ in range(iters):
        A = np.c_[xs[keep], np.ones(keep.sum())]
        (g, o), *_ = np.linalg.lstsq(A, ys[keep], rcond=None)
        r = np.abs(ys - (g * xs + o))
        mad = np.median(r[keep]) + 1e-3
        keep &= r < max(4.0, 4 * mad)
    return float(g), float(o)


def normalise_stack(aligned, covered, mask=None):
    """Bring every aligned sample to the median photometry of the stack (in place). Returns the
    per-sample (gain, offset) relative to the first sample."""
    stems = list(aligned)
    ref = aligned[stems[0]]
    params = {}
    for s in stems:
        m = covered[s] & covered[stems[0]]
        if mask is not None:
            m &= mask
        params[s] = photo_fit(aligned[s], ref, m)  # maps sample -> ref photometry
    # ref photometry -> median photometry: invert the median of sample -> ref maps
    gm = float(np.median([1.0 / p[0] for p in params.values()]))
    om = float(np.median([-p[1] / p[0] for p in params.values()]))
    for s in stems:
        g, o = params[s]
        aligned[s] = (aligned[s] * g + o) * gm + om
    return params


def aligned_samples(layout, L, size=None, full_only=False, pooled=False):
    """{stem: (image warped into the reference frame, covered mask, label)}; photometry normalised to
    the stack's median when the layout varies in contrast/brightness (`L["photometric"]`).
    full_only: skip samples exported at another size (asoct's downscaled exports).
    pooled: only the samples the layout's `fit_pool(label, image)` accepts (tomographer: gray scans)."""
    W, H = size or L["size"]
    T = load_json(layout + "_transforms.json")
    T.pop("_meta", None)
    imgs, cov, labs = {}, {}, {}
    for stem, p, lab in samples(layout):
        if pooled and L.get("fit_pool") and not L["fit_pool"](lab, Image.open(p)):
            continue
        a = load_rgb(p)
        if full_only and a.shape[:2] != (H, W):
            continue
        imgs[stem] = warp_to_ref(a, T[stem], (W, H))
        cov[stem] = warp_to_ref(np.ones(a.shape[:2], np.float32), T[stem], (W, H), fill=0.0) > 0.999
        labs[stem] = lab
    if L.get("photometric"):
        free = np.ones((H, W), bool)
        for x0, y0, x1, y1 in [fc["region"] for fc in L["fields"].values()] + L.get("photo_exclude", []):
            free[y0:y1, x0:x1] = False
        normalise_stack(imgs, cov, free)
    return {s: (imgs[s], cov[s], labs[s]) for s in imgs}


def gblur(a, sigma):
    """Separable Gaussian blur (numpy), edges replicated; a is HxW or HxWxC float."""
    if sigma <= 0:
        return a
    r = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    out = a.astype(np.float32)
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r, r)
        p = np.pad(out, pad, mode="edge")
        acc = np.zeros_like(out)
        for i, w in enumerate(k):
            sl = [slice(None)] * out.ndim
            sl[axis] = slice(i, i + out.shape[axis])
            acc += w * p[tuple(sl)]
        out = acc
    return out
