//! The subset of FHIR search the hub answers, parsed from a query string without I/O.
//!
//! | parameter | resources | meaning |
//! |---|---|---|
//! | `patient` | Observation, DiagnosticReport, Provenance | the chart number (the Patient is referenced by identifier: the hub holds no Patient resources) |
//! | `patient:identifier` | the same | `system\|value`: the chart number in the configured system |
//! | `date` | Observation, DiagnosticReport | exam date, `YYYY-MM-DD` with prefix `eq` (default), `ne`, `ge`, `le`, `gt`, `lt`; repeat to bound both ends |
//! | `code` | Observation | `system\|code` or `code`, comma-separated alternatives; matches `Observation.code` |
//! | `target` | Provenance | `Observation/<id>` or `DiagnosticReport/<id>` |
//! | `_count` | every search | page size, 1..=[`MAX_COUNT`] (default [`DEFAULT_COUNT`]) |
//! | `_offset` | every search | where the page starts (the `next` link sets it) |
//!
//! Any other parameter is refused (400 with an OperationOutcome) rather than ignored, so a
//! client never takes an unfiltered answer for a filtered one.

use chrono::NaiveDate;

use super::mapping::{self, Eye, Laterality};

/// Default page size.
pub const DEFAULT_COUNT: usize = 50;
/// Largest page size.
pub const MAX_COUNT: usize = 500;
/// Most records one search reads (a patient's history is far smaller); a search over more is
/// refused with a request to narrow it.
pub const MAX_RECORDS: i64 = 2000;

/// The resource a search is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/fhir/Observation`
    Observation,
    /// `/fhir/DiagnosticReport`
    DiagnosticReport,
    /// `/fhir/Provenance`
    Provenance,
}

impl Kind {
    /// The resource type's name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Observation => "Observation",
            Kind::DiagnosticReport => "DiagnosticReport",
            Kind::Provenance => "Provenance",
        }
    }

    /// The search parameters it takes (besides `_count` and `_offset`).
    pub fn params(self) -> &'static [&'static str] {
        match self {
            Kind::Observation => &["patient", "patient:identifier", "date", "code"],
            Kind::DiagnosticReport => &["patient", "patient:identifier", "date"],
            Kind::Provenance => &["patient", "patient:identifier", "target"],
        }
    }
}

/// A parsed search.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Search {
    /// The chart number.
    pub patient: Option<String>,
    /// Exam date bounds (SQL operator, date).
    pub dates: Vec<(&'static str, NaiveDate)>,
    /// Codes asked for: `(system, code)`, either matching.
    pub codes: Vec<(Option<String>, String)>,
    /// `Observation/<id>` or `DiagnosticReport/<id>`.
    pub target: Option<(String, String)>,
    /// Page size.
    pub count: usize,
    /// Page start.
    pub offset: usize,
    /// The parameters as given (for links and the audit trail), `_offset` left out.
    pub pairs: Vec<(String, String)>,
}

/// Parses `query` for a search of `kind`; `Err` says what is wrong. `patient_system` is the
/// configured chart-number system: a `patient:identifier` in another system matches nothing.
pub fn parse(kind: Kind, query: &str, patient_system: &str) -> Result<Search, String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|e| format!("query: {e}"))?;
    let mut s = Search {
        count: DEFAULT_COUNT,
        ..Default::default()
    };
    let mut patients = Vec::new();
    for (k, v) in &pairs {
        if v.chars().count() > 256 {
            return Err(format!("{k}: longer than 256 characters"));
        }
        match k.as_str() {
            "_count" => {
                s.count = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_COUNT).contains(n))
                    .ok_or_else(|| format!("_count must be 1..={MAX_COUNT}"))?;
            }
            "_offset" => {
                s.offset = v
                    .parse()
                    .ok()
                    .filter(|n| *n <= 10_000_000)
                    .ok_or("_offset must be 0..=10000000")?;
                continue;
            }
            k if !kind.params().contains(&k) => {
                return Err(format!(
                    "{} search does not support parameter {k:?} (supported: {}, _count, _offset)",
                    kind.name(),
                    kind.params().join(", ")
                ));
            }
            "patient" => {
                let id = v.strip_prefix("Patient/").unwrap_or(v);
                patients.push(id.to_owned());
            }
            "patient:identifier" => match v.split_once('|') {
                Some((sys, value)) if sys == patient_system => patients.push(value.to_owned()),
                Some(_) => patients.push(String::new()),
                None => patients.push(v.clone()),
            },
            "date" => s.dates.push(date(v)?),
            "code" => {
                for alt in v.split(',') {
                    s.codes.push(match alt.split_once('|') {
                        Some((sys, code)) => (
                            Some(sys.to_owned()).filter(|s| !s.is_empty()),
                            code.to_owned(),
                        ),
                        None => (None, alt.to_owned()),
                    });
                }
            }
            "target" => {
                let (t, id) = v
                    .split_once('/')
                    .filter(|(t, _)| matches!(*t, "Observation" | "DiagnosticReport"))
                    .ok_or("target must be Observation/<id> or DiagnosticReport/<id>")?;
                s.target = Some((t.to_owned(), id.to_owned()));
            }
            _ => unreachable!("listed in Kind::params"),
        }
        s.pairs.push((k.clone(), v.clone()));
    }
    patients.dedup();
    match patients.len() {
        0 if s.target.is_none() => {
            return Err(format!(
                "{} search needs patient=<chart number>{}",
                kind.name(),
                if kind == Kind::Provenance {
                    " or target=<reference>"
                } else {
                    ""
                }
            ))
        }
        0 => {}
        1 => s.patient = patients.pop(),
        _ => return Err("give one patient".into()),
    }
    Ok(s)
}

fn date(v: &str) -> Result<(&'static str, NaiveDate), String> {
    let (op, rest) = match v.get(..2) {
        Some("eq") => ("=", &v[2..]),
        Some("ne") => ("<>", &v[2..]),
        Some("ge") => (">=", &v[2..]),
        Some("le") => ("<=", &v[2..]),
        Some("gt") => (">", &v[2..]),
        Some("lt") => ("<", &v[2..]),
        _ => ("=", v),
    };
    let d = NaiveDate::parse_from_str(rest, "%Y-%m-%d")
        .map_err(|_| format!("date {v:?}: use [eq|ne|ge|le|gt|lt]YYYY-MM-DD"))?;
    Ok((op, d))
}

impl Search {
    /// Whether an Observation coded `code` (system, code) is asked for.
    pub fn wants(&self, system: &str, code: &str) -> bool {
        self.codes.is_empty()
            || self
                .codes
                .iter()
                .any(|(s, c)| c == code && s.as_deref().is_none_or(|s| s == system))
    }

    /// The stored field names an Observation matching the codes can come from (empty: any).
    pub fn fields(&self) -> Vec<String> {
        if self.codes.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for m in mapping::MEASURES {
            for eye in [Eye::Right, Eye::Left, Eye::None] {
                if (m.laterality == Laterality::Prefixed) == (eye == Eye::None) {
                    continue;
                }
                let c = m.group.map_or(m.code_for(eye), |g| g.code);
                if self.wants(c.system, c.code) {
                    out.push(m.field_name(eye));
                }
            }
        }
        // No measure matches: a field no record has, so the search finds nothing.
        if out.is_empty() {
            out.push(String::new());
        }
        out.sort();
        out.dedup();
        out
    }

    /// The record id (or its 32-digit prefix) a `target` names, if any.
    pub fn target_record(&self) -> Option<String> {
        let (_, id) = self.target.as_ref()?;
        let prefix: String = id.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
        (prefix.len() >= 32).then(|| prefix[..32].to_owned())
    }

    /// The query string of the page starting at `offset`.
    pub fn query_at(&self, offset: usize) -> String {
        let mut pairs = self.pairs.clone();
        pairs.retain(|(k, _)| k != "_count");
        pairs.push(("_count".into(), self.count.to_string()));
        pairs.push(("_offset".into(), offset.to_string()));
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    }
}

/// The 32-digit record prefix an Observation or Provenance id starts with, if well formed.
pub fn record_prefix(id: &str) -> Option<String> {
    let id = id.strip_prefix("rev-").unwrap_or(id);
    let p = id.get(..32)?;
    p.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        .then(|| p.to_owned())
}

/// Whether `id` is a well-formed FHIR id (`[A-Za-z0-9\-\.]{1,64}`).
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The device id behind a Device's FHIR id.
pub fn device_of(id: &str) -> String {
    id.replace('.', "_")
}

/// A searchset Bundle of `entries` (resources), page `[offset, offset + count)` of `total`.
pub fn bundle(
    base: &str,
    kind: Kind,
    search: &Search,
    total: usize,
    page: Vec<serde_json::Value>,
) -> serde_json::Value {
    let link = |rel: &str, offset: usize| {
        serde_json::json!({"relation": rel,
            "url": format!("{base}/{}?{}", kind.name(), search.query_at(offset))})
    };
    let mut links = vec![link("self", search.offset)];
    if search.offset + search.count < total {
        links.push(link("next", search.offset + search.count));
    }
    if search.offset > 0 {
        links.push(link("previous", search.offset.saturating_sub(search.count)));
    }
    let entries: Vec<serde_json::Value> = page
        .into_iter()
        .map(|r| {
            let full = format!(
                "{base}/{}/{}",
                r["resourceType"].as_str().unwrap_or_default(),
                r["id"].as_str().unwrap_or_default()
            );
            serde_json::json!({"fullUrl": full, "resource": r, "search": {"mode": "match"}})
        })
        .collect();
    serde_json::json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYS: &str = "urn:chart";

    #[test]
    fn parameters_are_parsed_and_unknown_ones_refused() {
        let s = parse(
            Kind::Observation,
            "patient=00012345&date=ge2024-01-01&date=lt2025-01-01&code=http://loinc.org|79892-6,refraction&_count=2",
            SYS,
        )
        .unwrap();
        assert_eq!(s.patient.as_deref(), Some("00012345"));
        assert_eq!(s.dates.len(), 2);
        assert_eq!(s.dates[0].0, ">=");
        assert_eq!(s.count, 2);
        assert!(s.wants(mapping::LOINC, "79892-6"));
        assert!(s.wants(mapping::LOCAL, "refraction"));
        assert!(!s.wants(mapping::LOCAL, "79892-6") && !s.wants(mapping::LOINC, "79893-4"));
        let f = s.fields();
        assert!(f.contains(&"r_iop".to_owned()) && f.contains(&"l_sph".to_owned()));
        assert!(!f.contains(&"l_iop".to_owned()));
        for bad in [
            "",
            "date=ge2024-01-01",
            "patient=1&foo=2",
            "patient=1&date=yesterday",
            "patient=1&_count=0",
            "patient=1&_count=501",
            "patient=1&patient=2",
            "patient=1&target=Patient/1",
        ] {
            assert!(parse(Kind::Observation, bad, SYS).is_err(), "{bad}");
        }
        let other = parse(Kind::Observation, "patient:identifier=urn:other|1", SYS).unwrap();
        assert_eq!(other.patient.as_deref(), Some(""));
        let p = parse(Kind::Provenance, "target=Observation/abc", SYS).unwrap();
        assert!(p.patient.is_none() && p.target.is_some());
    }

    #[test]
    fn next_links_carry_the_query_and_the_offset() {
        let s = parse(Kind::Observation, "patient=7&_count=2&_offset=2", SYS).unwrap();
        let b = bundle("https://h/fhir", Kind::Observation, &s, 5, vec![]);
        let links = b["link"].as_array().unwrap();
        assert!(links.iter().any(|l| l["relation"] == "next"
            && l["url"] == "https://h/fhir/Observation?patient=7&_count=2&_offset=4"));
        let last = parse(Kind::Observation, "patient=7&_count=2&_offset=4", SYS).unwrap();
        let b = bundle("https://h/fhir", Kind::Observation, &last, 5, vec![]);
        assert!(!b["link"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["relation"] == "next"));
    }
}
