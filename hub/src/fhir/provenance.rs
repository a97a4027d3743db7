//! Where values come from, as FHIR: the exam machine (Device), the source export
//! (DocumentReference, with the image's SHA-256) and each review decision (Provenance: who,
//! when, before -> after). Pure; called by [`super::resources::render`].

use serde_json::{json, Value};

use super::mapping;
use super::resources::{
    concept, device_id, document_id, ids, instant, provenance_id, reference, Exam, RenderContext,
    RenderedObservation, Review,
};

/// The Device of `exam`'s machine.
pub(super) fn device(exam: &Exam) -> Value {
    let mut d = json!({
        "resourceType": "Device",
        "id": device_id(&exam.device_id),
        "identifier": [{"system": ids::DEVICE, "value": exam.device_id}],
        "status": "active",
        "type": {"text": exam.device_type},
        "version": [{"type": {"text": "firmware"},
                     "value": exam.firmware_string.clone().unwrap_or_else(|| exam.firmware.clone())},
                    {"type": {"text": "examlink template"}, "value": exam.template}],
    });
    if let Some(model) = &exam.model {
        d["deviceName"] = json!([{"name": model, "type": "model-name"}]);
        d["modelNumber"] = json!(model);
    }
    d
}

/// The DocumentReference of `exam`'s source export.
pub(super) fn document(exam: &Exam, ctx: &RenderContext) -> Value {
    let ext = exam
        .source_file
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase());
    let content_type = match ext.as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("bmp") => "image/bmp",
        _ => "application/octet-stream",
    };
    let mut d = json!({
        "resourceType": "DocumentReference",
        "id": document_id(&exam.image_sha256),
        "masterIdentifier": {"system": ids::IMAGE_SHA256, "value": exam.image_sha256},
        "status": "current",
        "type": concept(mapping::EXPORT_DOCUMENT),
        "date": instant(exam.captured_at),
        "author": [exam.device_ref()],
        "description": format!("{} (SHA-256 {})", exam.source_file, exam.image_sha256),
        "content": [{"attachment": {"contentType": content_type, "title": exam.source_file,
                                    "creation": instant(exam.captured_at)}}],
    });
    if let Some(s) = exam.subject(ctx) {
        d["subject"] = s;
    }
    d
}

/// The Provenance of review decision `r`.
pub(super) fn provenance(exam: &Exam, observations: &[RenderedObservation], r: &Review) -> Value {
    let target = observations
        .iter()
        .find(|o| o.fields.contains(&r.field))
        .map(|o| {
            let id = o.resource["id"].as_str().unwrap_or_default();
            reference(
                "Observation",
                id,
                ids::OBSERVATION,
                o.resource["identifier"][0]["value"]
                    .as_str()
                    .unwrap_or_default(),
            )
        })
        .unwrap_or_else(|| {
            reference(
                "DiagnosticReport",
                &exam.record_id,
                ids::REPORT,
                &exam.record_id,
            )
        });
    let show = |v: &Option<String>| {
        v.as_deref()
            .map_or("(none)".to_owned(), |v| format!("{v:?}"))
    };
    let text = format!(
        "{}: {} ({}) -> {} ({})",
        r.field,
        show(&r.before),
        r.before_status,
        show(&r.value),
        r.decision
    );
    let agent = |name: &str, code: &str, display: &str| {
        json!({"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                     "code": code, "display": display}]},
               "who": {"identifier": {"system": ids::USER, "value": name}, "display": name}})
    };
    let mut agents = vec![agent(&r.by, "verifier", "Verifier")];
    agents.extend(r.also.iter().map(|n| agent(n, "verifier", "Verifier")));
    json!({
        "resourceType": "Provenance",
        "id": provenance_id(&exam.record_id, &r.field),
        "target": [target],
        "recorded": instant(r.at),
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                                 "code": "UPDATE", "display": "revise"}],
                     "text": text},
        "agent": agents,
        "entity": [{"role": "source", "what": exam.document_ref()}],
    })
}
