"""Per-layout authoring configuration: how to estimate shifts, which sample becomes the plate,
each field's spec (grammar, unit, range, step, absent markers, as in the catalog) and search region
(reference-frame pixels, [x0, y0, x1, y1], generous but free of neighbouring text), fonts to try,
and the anchors. Coordinates are reference-frame pixels."""

ID = {"grammar": {"kind": "digits", "count": 8}, "range": ["00000001", "99999999"]}
# Exam dates run up to the checking machine's UTC date plus a day ("today"), exam times over the
# whole day; the samples' 2019..2025 and clinic hours are not the devices' limits (issue #11).
DATE_RANGE = ["2000-01-01", "today"]
TIME = {"grammar": {"kind": "time"}}
EYE = {"grammar": {"kind": "choice", "choices": ["OD", "OS"]}}


def date(fmt):
    return {"grammar": {"kind": "date", "format": fmt}, "range": DATE_RANGE}


def dec(decimals, sign, unit, lo, hi, step=None, absent=()):
    d = {"grammar": {"kind": "decimal", "decimals": decimals, "sign": sign}, "unit": unit, "range": [lo, hi],
         "absent": list(absent)}
    if step is not None:
        d["step"] = step
    return d


def integer(sign, unit, lo, hi, absent=()):
    return {"grammar": {"kind": "integer", "sign": sign}, "unit": unit, "range": [lo, hi], "absent": list(absent)}


def f(spec, region=None, **kw):
    d = dict(spec)
    d["region"] = region
    d.update(kw)
    return d


def autoref_fields(ref_absent, coords):
    sph = dec(2, "always", "D", "-25.00", "+22.00", 0.25, ref_absent)
    cyl = dec(2, "negative", "D", "-8.00", "0.00", 0.25, ref_absent)
    axis = integer("none", "deg", "1", "180", ref_absent)
    k = dec(2, "none", "D", "38.00", "50.00", 0.25, ["---"])
    kax = integer("none", "deg", "1", "180", ["---"])
    specs = {
        "r_sph": sph, "r_cyl": cyl, "r_axis": axis, "l_sph": sph, "l_cyl": cyl, "l_axis": axis,
        "r_k1": k, "r_k1_axis": kax, "r_k2": k, "r_k2_axis": kax,
        "l_k1": k, "l_k1_axis": kax, "l_k2": k, "l_k2_axis": kax,
        "pd": dec(1, "none", "mm", "50.0", "75.0", 0.5),
    }
    return specs


FW2_SPECS = autoref_fields(["---"], None)
FW3_SPECS = autoref_fields(["ERR"], None)


def autoref_rules():
    rules = []
    for e in "rl":
        rules.append({"kind": "le", "a": e + "_k1", "b": e + "_k2"})
        rules.append({"kind": "perpendicular", "a": e + "_k1_axis", "b": e + "_k2_axis", "tolerance": 0.0})
    for e in "rl":
        rules.append({"kind": "absent_together", "fields": [e + "_sph", e + "_cyl", e + "_axis"]})
        rules.append({"kind": "absent_together", "fields": [e + "_k1", e + "_k1_axis", e + "_k2", e + "_k2_axis"]})
    return rules


BIO_ROWS = [
    ("al", dec(2, "none", "mm", "20.00", "32.00", absent=["ERR"]), 223),
    ("acd", dec(2, "none", "mm", "2.00", "4.80", absent=["---"]), 269),
    ("lt", dec(2, "none", "mm", "2.80", "6.00", absent=["---"]), 315),
    ("wtw", dec(1, "none", "mm", "10.0", "13.5", absent=["---"]), 361),
    ("k1", dec(2, "none", "D", "38.00", "50.00", absent=["---"]), 407),
    ("k2", dec(2, "none", "D", "38.00", "52.00", absent=["---"]), 453),
]

SPEC_ROWS = [
    ("ecd", integer("none", "cells/mm²", "800", "3800", ["---"]), 173),
    ("cv", integer("none", "%", "15", "80", ["---"]), 263),
    ("hex", integer("none", "%", "20", "85", ["---"]), 293),
    ("cct", integer("none", "µm", "420", "700", ["---"]), 383),
]

ASOCT_ROWS = [
    ("ata", dec(2, "none", "mm", "10.50", "13.00", absent=["---"]), 271),
    ("acw", dec(2, "none", "mm", "10.50", "13.20", absent=["---"]), 341),
    ("sts", dec(2, "none", "mm", "10.20", "13.40", absent=["---"]), 411),
    ("acd", dec(2, "none", "mm", "2.00", "4.20", absent=["---"]), 481),
    ("clr", integer("negative", "µm", "-150", "900", ["---"]), 551),
    ("lens_vault", integer("negative", "µm", "-300", "1200", ["---"]), 621),
]

TONO_IOP = dec(1, "none", "mmHg", "5.0", "45.0", absent=["---", "Err"])
TONO_CCT = integer("none", "µm", "420", "650", ["---"])
TONO_IOPC = dec(1, "none", "mmHg", "0.0", "60.0", absent=["---"])
# LCD ghosts: the unlit segments of the readout; IOP and IOPc have a decimal-point segment (its
# ghost shows where the value is "---"), CCT has none (measured: fitting "8.8.8" / "888" / "88.8"
# and the dot position's darkness on "---" samples)
SEG = {"anchor": "rs", "ink_thr": 150, "sizes": range(16, 90),
       "fonts": ["DSEG7Classic-Regular.ttf", "DSEG7Classic-Bold.ttf", "DSEG7Classic-Light.ttf",
                 "DSEG7Modern-Regular.ttf", "DSEG7Modern-Bold.ttf"]}

TOMO_FRONT = [
    ("k1", dec(2, "none", "D", "38.00", "50.00", absent=["---"]), 327),
    ("k2", dec(2, "none", "D", "38.00", "56.00", absent=["---"]), 359),
    ("km", dec(2, "none", "D", "38.00", "53.00", absent=["---"]), 391),
    ("kmax", dec(2, "none", "D", "39.00", "75.00", absent=["---"]), 455),
    ("astig", dec(2, "none", "D", "0.00", "8.00", absent=["---"]), 423),
]
TOMO_PACHY = [
    ("thinnest_pachy", integer("none", "µm", "300", "700", ["---"]), 736),
    ("apex_pachy", integer("none", "µm", "300", "720", ["---"]), 704),
    ("acd", dec(2, "none", "mm", "1.80", "4.50", absent=["---"]), 832),
    ("acv", integer("none", "mm³", "60", "300", ["---"]), 768),
    ("angle", dec(1, "none", "deg", "15.0", "55.0", absent=["---"]), 800),
]

LAYOUTS = {
    "autoref_fw2": {
        "device_type": "autoref", "firmware": "fw2", "model": "Vellmar RK-7", "firmware_string": "Ver 2.14",
        "size": (800, 600), "export_format": "png",
        "shift": {"mode": "integer", "shift_px": 8},
        "variation": {"shift_px": 8.0, "subpixel": False},
        "rules": autoref_rules(),
        "fonts": ["DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf"],
        "fields": {
            "patient_id": f(ID, [50, 45, 175, 75]),
            "exam_date": f(date("DD/MM/YYYY"), [72, 74, 210, 102]),
            "exam_time": f(TIME, [300, 74, 385, 102]),
            "r_sph": f(FW2_SPECS["r_sph"], [85, 256, 178, 290]),
            "r_cyl": f(FW2_SPECS["r_cyl"], [182, 256, 268, 290]),
            "r_axis": f(FW2_SPECS["r_axis"], [285, 256, 360, 290]),
            "l_sph": f(FW2_SPECS["l_sph"], [478, 256, 572, 290]),
            "l_cyl": f(FW2_SPECS["l_cyl"], [576, 256, 662, 290]),
            "l_axis": f(FW2_SPECS["l_axis"], [680, 256, 755, 290]),
            "r_k1": f(FW2_SPECS["r_k1"], anchor="rs", region=[185, 369, 268, 395]),
            "r_k1_axis": f(FW2_SPECS["r_k1_axis"], [285, 369, 350, 395]),
            "r_k2": f(FW2_SPECS["r_k2"], anchor="rs", region=[185, 396, 268, 424]),
            "r_k2_axis": f(FW2_SPECS["r_k2_axis"], [285, 396, 350, 424]),
            "l_k1": f(FW2_SPECS["l_k1"], anchor="rs", region=[580, 369, 662, 395]),
            "l_k1_axis": f(FW2_SPECS["l_k1_axis"], [680, 369, 745, 395]),
            "l_k2": f(FW2_SPECS["l_k2"], anchor="rs", region=[580, 396, 662, 424]),
            "l_k2_axis": f(FW2_SPECS["l_k2_axis"], [680, 396, 745, 424]),
            "pd": f(FW2_SPECS["pd"], [62, 508, 124, 540]),
        },
        "anchors": [
            {"name": "logo", "region": [2, 2, 132, 37], "text": "VELLMAR"},
            {"name": "model", "region": [140, 4, 420, 34], "text": "RK-7  AUTO REF / KERATOMETER"},
            {"name": "firmware", "region": [705, 4, 798, 34], "text": "Ver 2.14", "firmware": True},
            {"name": "ref_header", "region": [8, 114, 172, 143], "text": "<REF>  CYL(-)"},
            {"name": "krt_header", "region": [8, 309, 82, 336], "text": "<KRT>"},
            {"name": "krt_l_header", "region": [414, 343, 745, 372], "text": "L  mm  D  deg"},
            {"name": "footer", "region": [8, 566, 380, 592], "text": "MODE: R/K  AUTO  |  TARGET: FOG  |  PRINT: ON"},
        ],
    },
    "autoref_fw3": {
        "device_type": "autoref", "firmware": "fw3", "model": "Vellmar RK-7",
        "firmware_string": "Firmware 3.02.1",
        "size": (800, 600), "export_format": "png",
        "shift": {"mode": "integer", "shift_px": 8},
        "variation": {"shift_px": 8.0, "subpixel": False},
        "rules": autoref_rules(),
        "fonts": ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf"],
        "fields": {
            "patient_id": f(ID, [8, 76, 150, 102]),
            "exam_date": f(date("YYYY-MM-DD"), [8, 226, 150, 252]),
            "exam_time": f(TIME, [8, 276, 110, 302]),
            "r_sph": f(FW3_SPECS["r_sph"], [288, 176, 384, 206]),
            "r_cyl": f(FW3_SPECS["r_cyl"], [388, 176, 455, 206]),
            "r_axis": f(FW3_SPECS["r_axis"], [466, 176, 527, 206]),
            "l_sph": f(FW3_SPECS["l_sph"], [288, 446, 384, 476]),
            "l_cyl": f(FW3_SPECS["l_cyl"], [388, 446, 455, 476]),
            "l_axis": f(FW3_SPECS["l_axis"], [466, 446, 527, 476]),
            "r_k1": f(FW3_SPECS["r_k1"], [595, 118, 677, 147], anchor="rs"),
            "r_k1_axis": f(FW3_SPECS["r_k1_axis"], [684, 118, 740, 147], anchor="rs"),
            "r_k2": f(FW3_SPECS["r_k2"], [595, 150, 677, 179], anchor="rs"),
            "r_k2_axis": f(FW3_SPECS["r_k2_axis"], [684, 150, 740, 179], anchor="rs"),
            "l_k1": f(FW3_SPECS["l_k1"], [595, 388, 677, 417], anchor="rs"),
            "l_k1_axis": f(FW3_SPECS["l_k1_axis"], [684, 388, 740, 417], anchor="rs"),
            "l_k2": f(FW3_SPECS["l_k2"], [595, 420, 677, 449], anchor="rs"),
            "l_k2_axis": f(FW3_SPECS["l_k2_axis"], [684, 420, 740, 449], anchor="rs"),
            "pd": f(FW3_SPECS["pd"], [8, 343, 110, 376]),
        },
        "anchors": [
            {"name": "logo", "region": [2, 0, 200, 42], "text": "VELLMAR  RK-7"},
            {"name": "firmware", "region": [660, 4, 798, 40], "text": "Firmware 3.02.1", "firmware": True},
            {"name": "od_title", "region": [228, 56, 330, 86], "text": "OD  Right"},
            {"name": "os_title", "region": [228, 326, 320, 356], "text": "OS  Left"},
            {"name": "os_ref_header", "region": [232, 364, 530, 388], "text": "REF  SPH  CYL  AX"},
            {"name": "os_ker_header", "region": [552, 366, 784, 388], "text": "KER  D  @  mm"},
            # (not "Operator: 03" bottom-left: constant in the samples, but an operator id is data)
            {"name": "os_ker_rows", "region": [552, 464, 594, 508], "text": "AVG / CYL"},
        ],
    },
    "biometer_fw1": {
        "device_type": "biometer", "firmware": "fw1", "model": "Axalis OB-300", "firmware_string": "v7.3.0",
        "size": (1024, 768), "export_format": "png",
        "shift": {"mode": "integer", "shift_px": 10},
        "variation": {"shift_px": 10.0, "subpixel": False},
        "rules": [{"kind": "le", "a": "r_k1", "b": "r_k2"}, {"kind": "le", "a": "l_k1", "b": "l_k2"},
                  {"kind": "absent_together", "fields": ["r_k1", "r_k2"]},
                  {"kind": "absent_together", "fields": ["l_k1", "l_k2"]}],
        "fonts": ["Cousine-Bold.ttf", "Cousine-Regular.ttf"],
        "fields": dict(
            [("patient_id", f(ID, [22, 115, 200, 146])),
             ("exam_date", f(date("MM/DD/YYYY"), [772, 115, 928, 146]))]
            + [(e + "_" + k, f(spec, [x0, y - 18, x0 + 129, y + 17], anchor="rs"))
               for k, spec, y in BIO_ROWS for e, x0 in (("r", 100), ("l", 605))]),
        "anchors": [
            {"name": "logo", "region": [2, 0, 130, 44], "text": "AXALIS"},
            {"name": "model", "region": [150, 6, 360, 40], "text": "OB-300  Optical Biometer"},
            {"name": "firmware", "region": [950, 6, 1020, 40], "text": "v7.3.0", "firmware": True},
            {"name": "od_header", "region": [20, 162, 160, 192], "text": "OD  Right eye"},
            {"name": "os_header", "region": [525, 162, 650, 192], "text": "OS  Left eye"},
            {"name": "quality", "region": [20, 615, 190, 645], "text": "Measurement quality"},
            {"name": "os_index", "region": [760, 488, 845, 514], "text": "n = 1.3375"},
        ],
    },
    "specular_fw1": {
        "device_type": "specular", "firmware": "fw1", "model": "Cellique SM-5", "firmware_string": "Rev 2.0.6",
        "size": (640, 480), "export_format": "bmp", "plate_mode": "L",
        "shift": {"mode": "integer", "shift_px": 8, "border_tol": 24},
        "variation": {"shift_px": 8.0, "subpixel": False, "blur_px": [0.0, 0.5], "noise_std": [0.0, 3.0],
                      "contrast": [0.9, 1.1], "brightness": [-10.0, 10.0]},
        "rules": [{"kind": "absent_together", "fields": [e + "_ecd", e + "_cv", e + "_hex"]} for e in "rl"],
        "fonts": ["FreeMonoBold.ttf", "FreeMono.ttf"],
        "bg": "median", "ink_thr": 60, "photometric": True, "photo_exclude": [[0, 18, 248, 480]],
        # anchor_max: black areas clip at 0 under negative brightness, so they do not follow the
        # photometric correction (up to ~8 grey levels on the black label strips)
        "check": {"blur": 1.0, "thr": 40, "anchor_max": 10.0},
        "fields": dict(
            [("patient_id", f(ID, [300, 34, 440, 58])),
             ("exam_date", f(date("YYYY/MM/DD"), [300, 73, 440, 99]))]
            + [(e + "_" + k, f(spec, [x0, y - 13, x1, y + 12], anchor="rs"))
               for k, spec, y in SPEC_ROWS for e, x0, x1 in (("r", 300, 432), ("l", 440, 555))]),
        "anchors": [
            {"name": "title", "region": [255, 2, 405, 30], "text": "CELLIQUE SM-5"},
            {"name": "firmware", "region": [570, 3, 638, 30], "text": "Rev 2.0.6", "firmware": True},
            {"name": "od_label", "region": [2, 1, 60, 21], "text": "R (OD)"},
            {"name": "os_label", "region": [2, 238, 60, 258], "text": "L (OS)"},
            {"name": "row_labels", "region": [258, 135, 300, 395], "text": "NUM CD AVG SD CV HEX MAX MIN CT"},
            {"name": "legend", "region": [258, 450, 425, 470], "text": "CD = cell density  CT = thickness"},
        ],
    },
    "asoct_fw1": {
        "device_type": "asoct", "firmware": "fw1", "model": "Meridex AS-1", "firmware_string": "Build 3.4.12",
        "size": (1920, 1080), "export_format": "png",
        "shift": {"mode": "integer", "shift_px": 12, "size": (1920, 1080), "border_tol": 6},
        "variation": {"shift_px": 12.0, "subpixel": False, "contrast": [0.92, 1.08], "brightness": [-8.0, 8.0],
                      "downscale": [0.35, 0.6667]},
        "rules": [],
        "fonts": ["Inconsolata.otf"],
        "bg": "median", "photometric": True,
        # B-scan, thumbnails and the suggested-lens / exam-time lines differ between exports
        "photo_exclude": [[0, 140, 1240, 960]],
        "fields": dict(
            [("patient_id", f(ID, [1008, 96, 1190, 138])),
             ("exam_date", f(date("DD-Mon-YYYY"), [1550, 96, 1762, 138])),
             ("eye", f(EYE, [1735, 168, 1812, 216]))]
            + [(k, f(spec, [1640, y - 24, 1789, y + 20], anchor="rs")) for k, spec, y in ASOCT_ROWS]),
        "anchors": [
            {"name": "logo", "region": [2, 2, 170, 48], "text": "MERIDEX"},
            {"name": "model", "region": [250, 8, 600, 48], "text": "AS-1 Anterior Segment OCT"},
            {"name": "firmware", "region": [1750, 8, 1915, 48], "text": "Build 3.4.12", "firmware": True},
            {"name": "tabs", "region": [6, 60, 958, 108], "text": "Acquire  Analyze  ICL Sizing  Compare  Export"},
            {"name": "results_title", "region": [1245, 165, 1540, 206], "text": "ICL SIZING RESULTS"},
            {"name": "result_labels", "region": [1255, 245, 1632, 640], "text": "ATA ... Lens vault"},
            {"name": "status_bar", "region": [4, 1034, 412, 1070], "text": "Connected  |  DB: local  |  Export: PNG"},
        ],
    },
    "tonometer_fw1": {
        "device_type": "tonometer", "firmware": "fw1", "model": "Orvex NT-22", "firmware_string": "FW 5.1.3",
        "size": (800, 480), "export_format": "jpg",
        "shift": {"mode": "similarity", "rotation": False, "patch": 48, "patch_step": 32, "radius": 24,
                  "exclude": [[50, 50, 800, 80], [150, 130, 340, 330], [530, 130, 730, 330]]},
        "variation": {"shift_px": 12.0, "subpixel": True, "scale": [0.97, 1.03], "blur_px": [0.0, 0.9],
                      "noise_std": [0.0, 5.0], "contrast": [0.8, 1.15], "brightness": [-20.0, 15.0],
                      "jpeg_quality": [70, 92]},
        "rules": [{"kind": "absent_if_any_absent", "target": e + "_iopc", "of": [e + "_iop", e + "_cct"]}
                  for e in "rl"],
        "fonts": ["NotoSansMono-Regular.ttf", "NotoSansMono-Bold.ttf"],
        "bg": "median", "ink_thr": 120, "photometric": True, "erase_grow": 2, "plate_ink_thr": 90,
        # JPEG, blur up to 0.9 px and sub-pixel jitter: compare at a coarser scale
        "check": {"blur": 1.5, "thr": 60, "anchor_max": 8.0},
        "photo_exclude": [[150, 130, 340, 330], [530, 130, 730, 330]],
        "fields": {
            "patient_id": f(ID, [55, 60, 165, 87]),
            "exam_date": f(date("YYYY-MM-DD"), [540, 60, 682, 87]),
            "exam_time": f(TIME, [705, 60, 779, 87]),
            "r_iop": f(TONO_IOP, [155, 150, 316, 233], **SEG, ghost=["88.8"]),
            "l_iop": f(TONO_IOP, [537, 150, 702, 233], **SEG, ghost=["88.8"]),
            "r_cct": f(TONO_CCT, [255, 240, 326, 277], **SEG, ghost=["888"]),
            "l_cct": f(TONO_CCT, [640, 240, 711, 277], **SEG, ghost=["888"]),
            "r_iopc": f(TONO_IOPC, [255, 290, 328, 327], **SEG, ghost=["88.8"]),
            "l_iopc": f(TONO_IOPC, [640, 290, 711, 327], **SEG, ghost=["88.8"]),
        },
        "anchors": [
            {"name": "title", "region": [20, 20, 385, 50], "text": "ORVEX NT-22  NON-CONTACT TONOMETER"},
            {"name": "firmware", "region": [695, 20, 785, 50], "text": "FW 5.1.3", "firmware": True},
            {"name": "r_header", "region": [30, 108, 160, 156], "text": "R  IOP  AVG"},
            {"name": "l_header", "region": [411, 108, 542, 156], "text": "L  IOP  AVG"},
            {"name": "footer", "region": [22, 423, 380, 468], "text": "IOPc = IOP corrected for CCT (ref 545 um) / PRESS [PRINT] TO OUTPUT"},
            {"name": "l_labels", "region": [550, 248, 600, 324], "text": "CCT / IOPc"},
            {"name": "air_puff", "region": [680, 443, 760, 468], "text": "AIR PUFF"},
        ],
    },
    "tomographer_fw1": {
        "device_type": "tomographer", "firmware": "fw1", "model": "Lumora CT-9", "firmware_string": "Software 1.8.4",
        "size": (1240, 1754), "export_format": "png", "plate_mode": "L",
        "shift": {"mode": "similarity", "rotation": True, "patch": 48, "patch_step": 48, "radius": 6,
                  "coarse": 3, "coarse_radius": 64, "max_shift": 64},
        "variation": {"shift_px": 12.0, "subpixel": True, "scale": [0.97, 1.03], "rotation_deg": 1.5,
                      "blur_px": [0.3, 1.1], "noise_std": [1.0, 3.5], "noise_correlated": True,
                      "contrast": [0.8, 1.05], "brightness": [-12.0, 8.0], "jpeg_quality": [72, 90],
                      "scan_modes": {"gray": 0.5, "bitonal": 0.15, "palette": 0.2, "rgb": 0.15},
                      "bitonal_threshold": [120, 175], "paper": True},
        "rules": [
            {"kind": "absent_together", "fields": ["k1", "k2", "km", "astig"]},
            {"kind": "mean", "target": "km", "of": ["k1", "k2"], "tolerance": 0.006},
            {"kind": "difference", "target": "astig", "of": ["k2", "k1"], "tolerance": 0.001},
        ],
        "fonts": ["LiberationSans-Bold.ttf", "LiberationSans-Regular.ttf"],
        "bg": "median", "ink_thr": 120, "photometric": True, "erase_grow": 2, "plate_ink_thr": 90,
        "fit_pool": lambda lab, img: img.mode == "L",
        "check": {"blur": 1.5, "thr": 60, "anchor_max": 12.0, "gray": True, "local_offset": True},
        "fields": dict(
            [("patient_id", f(ID, [195, 178, 300, 205])),
             ("exam_date", f(date("DD.MM.YYYY"), [195, 213, 310, 243])),
             ("eye", f(EYE, [905, 138, 980, 178]))]
            # the unit "D" starts 5 px right of the values: 3 px margin on that side
            + [(k, f(spec, [290, y - 15, 383, y + 13], anchor="rs", margin=[5, 5, 3, 5]))
               for k, spec, y in TOMO_FRONT]
            + [(k, f(spec, [280, y - 15, 374, y + 13], anchor="rs")) for k, spec, y in TOMO_PACHY]),
        "anchors": [
            {"name": "logo", "region": [52, 45, 270, 104], "text": "LUMORA"},
            {"name": "model", "region": [840, 58, 1186, 91], "text": "CT-9 Corneal Tomographer"},
            {"name": "firmware", "region": [822, 93, 1186, 120], "text": "Software 1.8.4 (r2207)  |  4 Maps Refractive",
             "firmware": True},
            {"name": "cornea_front", "region": [55, 272, 560, 305], "text": "Cornea Front"},
            {"name": "pachymetry", "region": [55, 612, 560, 650], "text": "Pachymetry / Chamber"},
            {"name": "disclaimer", "region": [55, 1647, 695, 1673],
             "text": "Not for diagnostic use without clinical correlation. Values computed on 25 Scheimpflug images."},
            {"name": "page", "region": [1105, 1676, 1186, 1701], "text": "Page 1 / 1"},
        ],
    },
}
