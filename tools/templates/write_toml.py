"""Write templates/<layout>.toml from layouts.py (specs, variation, rules) and the measured results
(out/<layout>_render.json, out/<layout>_boxes.json).

    python3 write_toml.py autoref_fw2

Every cross-field rule is checked against all labels of the layout first; a rule that any label
violates is dropped (and reported), so the template never flags a correct export.
"""

import os
import sys

from common import TEMPLATES, load_json, samples
from layouts import LAYOUTS


VARIATION_DEFAULTS = {
    "shift_px": 0.0, "subpixel": False, "scale": [1.0, 1.0], "rotation_deg": 0.0, "blur_px": [0.0, 0.0],
    "noise_std": [0.0, 0.0], "noise_correlated": False, "contrast": [1.0, 1.0], "brightness": [0.0, 0.0],
    "jpeg_quality": None, "downscale": None, "scan_modes": None, "bitonal_threshold": None, "paper": False,
}


def q(s):
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def val(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return q(v)
    if isinstance(v, float):
        return repr(round(v, 4))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(val(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join("%s = %s" % (k, val(x)) for k, x in v.items()) + " }"
    return str(v)


def num(v):
    return None if v is None else float(v)


def rule_holds(rule, fields):
    k = rule["kind"]
    g = fields.get
    if k == "le":
        a, b = num(g(rule["a"])), num(g(rule["b"]))
        return a is None or b is None or a <= b + 1e-9
    if k == "mean":
        xs = [num(g(n)) for n in rule["of"]]
        t = num(g(rule["target"]))
        return t is None or None in xs or abs(t - sum(xs) / len(xs)) <= rule["tolerance"] + 1e-9
    if k == "difference":
        t, x, y = num(g(rule["target"])), num(g(rule["of"][0])), num(g(rule["of"][1]))
        return None in (t, x, y) or abs(t - (x - y)) <= rule["tolerance"] + 1e-9
    if k == "perpendicular":
        x, y = num(g(rule["a"])), num(g(rule["b"]))
        if x is None or y is None:
            return True
        return abs(abs(x - y) % 180 - 90) <= rule.get("tolerance", 0.0) + 1e-9
    if k == "absent_together":
        n = sum(g(f) is None for f in rule["fields"])
        return n in (0, len(rule["fields"]))
    if k == "absent_if_any_absent":
        return (g(rule["target"]) is None) == any(g(f) is None for f in rule["of"])
    raise ValueError(k)


def main(layout):
    L = LAYOUTS[layout]
    fits = load_json(layout + "_render.json")
    boxes = load_json(layout + "_boxes.json")
    labels = [lab["fields"] for _, _, lab in samples(layout)]
    W, H = L["size"]
    lines = [
        "# %s (%s), firmware %s: layout %s." % (L["model"], L["device_type"], L["firmware_string"], layout),
        "# Boxes, renders, anchors and plate measured on the 25 samples in shared/devices/%s" % layout,
        "# with tools/templates (see tools/templates/README.md); notes in firmware-notes/%s.md." % L["device_type"],
        "",
        "id = %s" % q(layout),
        "version = %d" % L.get("version", 2),  # 2: exam_date up to "today", any exam_time (#11)
        "device_type = %s" % q(L["device_type"]),
        "firmware = %s" % q(L["firmware"]),
        "model = %s" % q(L["model"]),
        "firmware_string = %s" % q(L["firmware_string"]),
        "width = %d" % W,
        "height = %d" % H,
        "plate = %s" % q("plates/%s.png" % layout),
        "export_format = %s" % q(L["export_format"]),
        "",
        "[variation]",
    ]
    var = dict(VARIATION_DEFAULTS)
    var.update(L["variation"])
    for k, v in var.items():
        if v is not None:
            lines.append("%s = %s" % (k, val(v)))
    for a in boxes["anchors"]:
        lines += ["", "[[anchors]]", "name = %s" % q(a["name"]), "box = %s" % val(a["box"])]
        if a.get("text"):
            lines.append("text = %s" % q(a["text"]))
        if a.get("firmware"):
            lines.append("firmware = true")
    for name, fcfg in L["fields"].items():
        fit, b = fits[name], boxes["fields"][name]
        lines += ["", "[[fields]]", "name = %s" % q(name), "box = %s" % val(b["box"]),
                  "grammar = %s" % val(fcfg["grammar"])]
        if fcfg.get("unit"):
            lines.append("unit = %s" % q(fcfg["unit"]))
        if fcfg.get("range"):
            lines.append("range = %s" % val(fcfg["range"]))
        if fcfg.get("step") is not None:
            lines.append("step = %s" % val(float(fcfg["step"])))
        if fcfg.get("absent"):
            lines.append("absent = %s" % val(fcfg["absent"]))
        r = {"font": fit["font"], "size_px": float(fit["size"]), "color": fit["color"],
             "origin": [float(fit["origin"][0]), float(fit["origin"][1])], "anchor": fit["anchor"]}
        if fit.get("ghost_text"):
            r["ghost"] = fit["ghost"]
            r["ghost_text"] = fit["ghost_text"]
        lines.append("render = %s" % val(r))
    kept = []
    for rule in L.get("rules", []):
        bad = [i for i, f in enumerate(labels) if not rule_holds(rule, f)]
        if bad:
            print("  dropped rule %s: fails on %d labels" % (rule, len(bad)))
            continue
        kept.append(rule)
        lines += ["", "[[rules]]"] + ["%s = %s" % (k, val(v)) for k, v in rule.items()]
    path = os.path.join(TEMPLATES, layout + ".toml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("%s: %d fields, %d anchors, %d rules -> %s" % (layout, len(L["fields"]), len(boxes["anchors"]),
                                                         len(kept), path))


if __name__ == "__main__":
    for a in sys.argv[1:]:
        main(a)
