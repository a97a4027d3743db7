"""Estimate every sample's transform (reference frame -> sample) for a layout.

    python3 shifts.py autoref_fw2 [more layouts...]

Writes out/<layout>_transforms.json: {stem: {"A": 2x2, "t": [tx, ty]}, "_meta": {...}}.

Integer-shift layouts (autoref, biometer, specular, asoct): phase correlation of each sample against a
reference sample gives the relative shift; the absolute offset (the layout's nominal position) comes
from the fill bands the exporter leaves at the image border when it shifts the screen (a sample shifted
right by k px has k columns of flat background on its left): each band votes for an offset, and the
most voted offset that keeps every sample within the catalog's +-shift_px wins (a screen edge that is
itself flat inflates its side's votes; the range constraint rules those out). Without usable votes
the middle of the feasible range is taken. asoct samples downscaled to 1280x720 are upscaled by 1.5
for the estimate.

Sub-pixel layouts with scale/rotation (tonometer, tomographer): a grid of patches on fixed content is
matched (normalised cross-correlation, parabolic sub-pixel peak) against the reference sample and a
similarity transform is fitted robustly (outlier patches, i.e. values that changed, are dropped). The
nominal frame is the middle of the observed ranges of scale, rotation and shift of the image centre
(the catalog draws them uniformly; the midrange estimates the centre of a uniform range far better
than the median).
"""

import sys
from collections import Counter

import numpy as np
from PIL import Image

from common import gray, load_rgb, samples, save_json, tr_compose, tr_inverse, tr_params
from layouts import LAYOUTS


def phase_corr(a, b, max_shift=None):
    """Integer shift s with b(x + s) ~ a(x), and the peak height (|s| <= max_shift when given:
    layouts with two similar panels side by side have a second peak at the panel distance)."""
    A = np.fft.fft2(a - a.mean())
    B = np.fft.fft2(b - b.mean())
    R = np.conj(A) * B
    R /= np.abs(R) + 1e-6
    r = np.fft.ifft2(R).real
    h, w = r.shape
    if max_shift is not None:
        yy = np.minimum(np.arange(h), h - np.arange(h))[:, None]
        xx = np.minimum(np.arange(w), w - np.arange(w))[None, :]
        r = np.where((yy <= max_shift) & (xx <= max_shift), r, -np.inf)
    iy, ix = np.unravel_index(np.argmax(r), r.shape)
    if iy > h // 2:
        iy -= h
    if ix > w // 2:
        ix -= w
    return int(ix), int(iy), float(r.max())


def border_bands(a, tol):
    """Number of flat rows/columns at the top, bottom, left, right (flat: max-min <= tol per channel)."""

    def flat(line):
        return np.all(line.max(axis=0) - line.min(axis=0) <= tol)

    h, w = a.shape[:2]
    out = []
    for lines in ((a[i] for i in range(h)), (a[h - 1 - i] for i in range(h)),
                  (a[:, i] for i in range(w)), (a[:, w - 1 - i] for i in range(w))):
        n = 0
        for line in lines:
            if not flat(line):
                break
            n += 1
        out.append(n)
    return out


def refine_downscaled(ref, ref_rel, c, small, d0, radius=2):
    """Full-resolution shift of a downscaled export: the full-size reference sample, moved to each
    candidate shift and downscaled (Lanczos, bilinear, nearest), is compared with the export; the
    candidate with the smallest mean abs difference (offset removed) wins.
    Phase correlation on the upscaled export is only good to +-1 px."""
    h, w = small.shape[:2]
    H, W = ref.shape[:2]
    dref = (ref_rel[0] + c[0], ref_rel[1] + c[1])
    sg = gray(small)
    best = None
    for ddx in range(-radius, radius + 1):
        for ddy in range(-radius, radius + 1):
            d = (d0[0] + ddx, d0[1] + ddy)
            # content at ref-sample pixel x appears at x - dref + d
            mv = (d[0] - dref[0], d[1] - dref[1])
            moved = np.roll(np.roll(ref, mv[1], 0), mv[0], 1)
            for rs in (Image.LANCZOS, Image.BILINEAR, Image.NEAREST):
                sm = gray(np.asarray(Image.fromarray(moved.astype(np.uint8)).resize((w, h), rs), np.float32))
                m = 20
                diff = sm[m:-m, m:-m] - sg[m:-m, m:-m]
                score = float(np.mean(np.abs(diff - np.median(diff))))
                if best is None or score < best[0]:
                    best = (score, d)
    return best[1]


def estimate_integer(layout, cfg):
    S = samples(layout)
    full = cfg.get("size")
    ref_stem = cfg.get("shift_ref", S[0][0])
    imgs = {}
    for stem, p, _ in S:
        a = load_rgb(p)
        scale = 1.0
        if full and a.shape[1] != full[0]:
            scale = a.shape[1] / full[0]
            a = np.asarray(Image.fromarray(a.astype(np.uint8)).resize(full, Image.BICUBIC), dtype=np.float32)
        imgs[stem] = (a, scale)
    ref = gray(imgs[ref_stem][0])
    rel = {}
    for stem, (a, scale) in imgs.items():
        dx, dy, pk = phase_corr(ref, gray(a))
        rel[stem] = (dx, dy, pk, scale)
    # absolute offset from border fill bands (full-size, lossless-ish samples only)
    tol = cfg.get("border_tol", 0)
    cx, cy = Counter(), Counter()
    for stem, p, _ in S:
        a, scale = imgs[stem]
        if scale != 1.0:
            continue
        top, bottom, left, right = border_bands(a, tol)
        dx, dy = rel[stem][:2]
        # shift d = s + c; band on top/left = d, on bottom/right = -d
        if top and not bottom:
            cy[top - dy] += 1
        if bottom and not top:
            cy[-bottom - dy] += 1
        if left and not right:
            cx[left - dx] += 1
        if right and not left:
            cx[-right - dx] += 1
        meta = {"ref": ref_stem, "border_votes_x": dict(cx), "border_votes_y": dict(cy)}
    # feasible offsets: every sample's absolute shift within +-shift_px
    smax = cfg["shift_px"]
    c = []
    for k, votes, i in (("x", cx, 0), ("y", cy, 1)):
        ss = [r[i] for r in rel.values()]
        lo, hi = -smax - min(ss), smax - max(ss)
        ok = [(n, v) for v, n in votes.items() if lo <= v <= hi]
        if ok:
            c.append(max(ok)[1])
            meta["nominal_" + k] = "border (feasible %d..%d)" % (lo, hi)
        else:
            c.append(int(round((lo + hi) / 2)))
            meta["nominal_" + k] = "midrange (feasible %d..%d)" % (lo, hi)
    out = {}
    full_ref = next(st for st, (_, sc) in imgs.items() if sc == 1.0)
    for stem, (dx, dy, pk, scale) in rel.items():
        d = (dx + c[0], dy + c[1])
        if scale != 1.0:
            d = refine_downscaled(imgs[full_ref][0], rel[full_ref][:2], c, load_rgb(dict((s, p) for s, p, _ in S)[stem]),
                                  d)
        if scale == 1.0:
            out[stem] = {"A": [[1.0, 0.0], [0.0, 1.0]], "t": [float(d[0]), float(d[1])], "peak": pk}
        else:
            # resize maps pixel centres: xs + 0.5 = (x + d + 0.5) * scale
            out[stem] = {"A": [[scale, 0.0], [0.0, scale]],
                         "t": [(d[0] + 0.5) * scale - 0.5, (d[1] + 0.5) * scale - 0.5], "peak": pk,
                         "shift_full": [d[0], d[1]]}
    out["_meta"] = meta
    return out


# ------------------------------------------------------------------ similarity (sub-pixel) layouts


def ncc_search(ref_patch, img, cx, cy, radius):
    """Best sub-pixel displacement of ref_patch (centred at cx, cy in ref) within img +- radius."""
    ph, pw = ref_patch.shape
    x0, y0 = int(cx - pw // 2 - radius), int(cy - ph // 2 - radius)
    win = img[max(0, y0):y0 + ph + 2 * radius, max(0, x0):x0 + pw + 2 * radius]
    if y0 < 0 or x0 < 0 or win.shape != (ph + 2 * radius, pw + 2 * radius):
        return None
    p = ref_patch - ref_patch.mean()
    pn = np.sqrt((p * p).sum()) + 1e-6
    # correlation by FFT over the window
    from numpy.fft import irfft2, rfft2
    H, W = win.shape
    F = rfft2(win) * np.conj(rfft2(p, s=(H, W)))
    corr = irfft2(F, s=(H, W))[: 2 * radius + 1, : 2 * radius + 1]
    # local normalisation
    c1 = np.cumsum(np.cumsum(np.pad(win, ((1, 0), (1, 0))), 0), 1)
    c2 = np.cumsum(np.cumsum(np.pad(win * win, ((1, 0), (1, 0))), 0), 1)
    n = ph * pw
    s1 = c1[ph:, pw:] - c1[:-ph, pw:] - c1[ph:, :-pw] + c1[:-ph, :-pw]
    s2 = c2[ph:, pw:] - c2[:-ph, pw:] - c2[ph:, :-pw] + c2[:-ph, :-pw]
    # floor: a flat window (far less energy than the patch) must not score high by 0/0
    var = np.maximum(s2 - s1 * s1 / n, 0.05 * pn * pn)
    ncc = corr / (np.sqrt(var[: 2 * radius + 1, : 2 * radius + 1]) * pn)
    iy, ix = np.unravel_index(np.argmax(ncc), ncc.shape)
    best = ncc[iy, ix]

    def parab(m, c, p_):
        d = m - 2 * c + p_
        return 0.0 if d >= 0 else 0.5 * (m - p_) / d

    fx = parab(ncc[iy, ix - 1], best, ncc[iy, ix + 1]) if 0 < ix < ncc.shape[1] - 1 else 0.0
    fy = parab(ncc[iy - 1, ix], best, ncc[iy + 1, ix]) if 0 < iy < ncc.shape[0] - 1 else 0.0
    return ix - radius + fx, iy - radius + fy, float(best)


def fit_similarity(src, dst, w=None, rotation=True):
    """Least-squares similarity dst = s R src + t (rotation=False: dst = s src + t). Returns tr dict."""
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    w = np.ones(len(src)) if w is None else np.asarray(w, float)
    if not rotation:
        M = np.zeros((2 * len(src), 3))
        M[0::2] = np.c_[src[:, 0], np.ones(len(src)), np.zeros(len(src))]
        M[1::2] = np.c_[src[:, 1], np.zeros(len(src)), np.ones(len(src))]
        ww = np.repeat(w, 2)
        (a, tx, ty), *_ = np.linalg.lstsq(M * ww[:, None], dst.reshape(-1) * ww, rcond=None)
        return {"A": [[a, 0.0], [0.0, a]], "t": [tx, ty]}
    # unknowns a, b, tx, ty with A = [[a, -b], [b, a]]
    M = np.zeros((2 * len(src), 4))
    M[0::2] = np.c_[src[:, 0], -src[:, 1], np.ones(len(src)), np.zeros(len(src))]
    M[1::2] = np.c_[src[:, 1], src[:, 0], np.zeros(len(src)), np.ones(len(src))]
    y = dst.reshape(-1)
    ww = np.repeat(w, 2)
    sol, *_ = np.linalg.lstsq(M * ww[:, None], y * ww, rcond=None)
    a, b, tx, ty = sol
    return {"A": [[a, -b], [b, a]], "t": [tx, ty]}


def apply(tr, pts):
    return np.asarray(pts, float) @ np.array(tr["A"]).T + np.array(tr["t"])


def patch_points(refg, cfg):
    """Centres of textured patches on the reference (excluding configured value regions)."""
    ps = cfg.get("patch", 48)
    step = cfg.get("patch_step", 40)
    h, w = refg.shape
    excl = cfg.get("exclude", [])
    pts = []
    for cy in range(ps, h - ps, step):
        for cx in range(ps, w - ps, step):
            if any(x <= cx < x + bw and y <= cy < y + bh for x, y, bw, bh in excl):
                continue
            p = refg[cy - ps // 2:cy + ps // 2, cx - ps // 2:cx + ps // 2]
            gy, gx = np.gradient(p)
            # need structure in both directions
            if (np.abs(gx) > 20).sum() > ps and (np.abs(gy) > 20).sum() > ps:
                pts.append((cx, cy))
    return pts


def match_fit(refg, g, pts, guess, radius, ps, cfg):
    """Match patches of refg around their position predicted by `guess` and fit the transform.
    Coordinates are PIL's continuous ones (pixel i spans [i, i+1)): a patch over rows
    [cy - ps/2, cy + ps/2) is centred at cy."""
    src, dst, wts = [], [], []
    pred = apply(guess, np.array(pts, float))
    for (cx, cy), (px, py) in zip(pts, pred):
        ix, iy = int(round(px)), int(round(py))
        r = ncc_search(refg[cy - ps // 2:cy + ps // 2, cx - ps // 2:cx + ps // 2], g, ix, iy, radius)
        if r is None or r[2] < cfg.get("min_ncc", 0.6):
            continue
        src.append((cx, cy))
        dst.append((ix + r[0], iy + r[1]))
        wts.append(r[2])
    src, dst, wts = np.array(src), np.array(dst), np.array(wts)
    keep = np.ones(len(src), bool)
    for _ in range(6):
        tr = fit_similarity(src[keep], dst[keep], wts[keep], cfg.get("rotation", True))
        res = np.linalg.norm(apply(tr, src) - dst, axis=1)
        thr = max(0.5, 3 * np.median(res[keep]))
        keep = res < thr
    tr["resid_px"] = float(np.median(res[keep]))
    tr["patches"] = int(keep.sum())
    return tr


def estimate_similarity(layout, cfg):
    S = samples(layout)
    ref_stem = cfg.get("shift_ref", S[0][0])
    prep = cfg.get("prep", lambda a: gray(a))
    refg = prep(load_rgb(dict((s, p) for s, p, _ in S)[ref_stem]))
    pts = patch_points(refg, cfg)
    ps = cfg.get("patch", 48)
    radius = cfg.get("radius", 40)
    rel = {}
    for stem, p, _ in S:
        g = prep(load_rgb(p))
        # coarse integer shift first
        dx, dy, _ = phase_corr(refg, g, cfg.get("max_shift", 48))
        guess = {"A": [[1.0, 0.0], [0.0, 1.0]], "t": [float(dx), float(dy)]}
        if cfg.get("coarse"):
            # rotation/scale move the corners far from the global shift: a first pass on every
            # `coarse`-th patch with a wide search, then the full pass around its prediction
            guess = match_fit(refg, g, pts[::cfg["coarse"]], guess, cfg.get("coarse_radius", 64), ps, cfg)
        tr = match_fit(refg, g, pts, guess, radius, ps, cfg)
        rel[stem] = tr
    # nominal = the middle of the observed ranges (scale, rotation, shift of the image centre): the
    # catalog draws them uniformly, and the midrange of 25 uniform draws is a far better estimate of
    # the centre than their median (about 0.7 px against 2.4 px for +-12 px).
    h, w = refg.shape
    c = np.array([w / 2, h / 2])
    params = np.array([tr_params(t) for t in rel.values()])
    cshift = np.array([np.array(t["A"]) @ c + np.array(t["t"]) - c for t in rel.values()])
    mid = lambda v: (v.min() + v.max()) / 2
    s_mid, r_mid = mid(params[:, 0]), mid(params[:, 1])
    cs_mid = np.array([mid(cshift[:, 0]), mid(cshift[:, 1])])
    th = np.radians(r_mid)
    A = s_mid * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    # M maps ref coords -> coords in a sample at the nominal transform: A (x - c) + c + cs_mid
    M = {"A": A.tolist(), "t": (c + cs_mid - A @ c).tolist()}
    Minv = tr_inverse(M)
    out = {}
    for stem, tr in rel.items():
        # nominal -> sample = (ref -> sample) ∘ (nominal -> ref)
        t = tr_compose(tr, Minv)
        t["resid_px"] = tr["resid_px"]
        t["patches"] = tr["patches"]
        out[stem] = t
    out["_meta"] = {"ref": ref_stem, "nominal_rel_to_ref": [s_mid, r_mid, cs_mid[0], cs_mid[1]],
                    "patch_points": len(pts), "nominal": "midrange of scale, rotation, centre shift"}
    return out


def main(layouts):
    for layout in layouts:
        cfg = LAYOUTS[layout]["shift"]
        if cfg["mode"] == "integer":
            out = estimate_integer(layout, cfg)
        else:
            out = estimate_similarity(layout, cfg)
        save_json(layout + "_transforms.json", out)
        meta = out.pop("_meta")
        print(layout, meta)
        ps = np.array([tr_params(t) for t in out.values()])
        print("  tx %.2f..%.2f  ty %.2f..%.2f  scale %.4f..%.4f  rot %.3f..%.3f" % (
            ps[:, 2].min(), ps[:, 2].max(), ps[:, 3].min(), ps[:, 3].max(), ps[:, 0].min(), ps[:, 0].max(),
            ps[:, 1].min(), ps[:, 1].max()))
        W, H = LAYOUTS[layout]["size"]
        cs = []
        for stem, t in out.items():
            s, r, tx, ty = tr_params(t)
            # shift of the image centre (the catalog's translation when scaling about the centre)
            c = np.array([W / 2, H / 2])
            sc = np.array(t["A"]) @ c + np.array(t["t"]) - c
            cs.append(sc)
            extra = "  resid %.2f n=%d" % (t["resid_px"], t["patches"]) if "resid_px" in t else ""
            print("  %s t=(%.2f, %.2f) centre shift=(%.2f, %.2f) s=%.4f rot=%.3f%s" % (
                stem, tx, ty, sc[0], sc[1], s, r, extra))
        cs = np.array(cs)
        print("  centre shift x %.2f..%.2f  y %.2f..%.2f" % (cs[:, 0].min(), cs[:, 0].max(), cs[:, 1].min(),
                                                           cs[:, 1].max()))


if __name__ == "__main__":
    main(sys.argv[1:])
