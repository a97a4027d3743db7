//! The device catalog's canonical field names, per device type, in catalog order.
//! A template must list exactly these fields, in this order.

/// Device types and their canonical fields.
pub const DEVICES: &[(&str, &[&str])] = &[
    (
        "autoref",
        &[
            "patient_id", "exam_date", "exam_time", "r_sph", "r_cyl", "r_axis", "l_sph", "l_cyl",
            "l_axis", "r_k1", "r_k1_axis", "r_k2", "r_k2_axis", "l_k1", "l_k1_axis", "l_k2",
            "l_k2_axis", "pd",
        ],
    ),
    (
        "tonometer",
        &[
            "patient_id", "exam_date", "exam_time", "r_iop", "l_iop", "r_cct", "l_cct", "r_iopc",
            "l_iopc",
        ],
    ),
    (
        "tomographer",
        &[
            "patient_id", "exam_date", "eye", "k1", "k2", "km", "kmax", "astig",
            "thinnest_pachy", "apex_pachy", "acd", "acv", "angle",
        ],
    ),
    (
        "biometer",
        &[
            "patient_id", "exam_date", "r_al", "l_al", "r_acd", "l_acd", "r_lt", "l_lt", "r_wtw",
            "l_wtw", "r_k1", "l_k1", "r_k2", "l_k2",
        ],
    ),
    (
        "specular",
        &[
            "patient_id", "exam_date", "r_ecd", "l_ecd", "r_cv", "l_cv", "r_hex", "l_hex",
            "r_cct", "l_cct",
        ],
    ),
    (
        "asoct",
        &["patient_id", "exam_date", "eye", "ata", "acw", "sts", "acd", "clr", "lens_vault"],
    ),
];

/// The canonical fields of `device_type`, or `None` for an unknown type.
pub fn fields(device_type: &str) -> Option<&'static [&'static str]> {
    DEVICES
        .iter()
        .find(|(d, _)| *d == device_type)
        .map(|(_, f)| *f)
}
