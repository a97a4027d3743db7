//! FHIR R4 for every stored export (#16): the mapping, the read-only API under `/fhir`, and the
//! optional push to an external FHIR server.
//!
//! - [`mapping`]: field → code, system, UCUM unit (the table of `docs/fhir-mapping.md`).
//! - [`resources`]: one stored export → Device, DocumentReference, Observations,
//!   DiagnosticReport, Provenances (pure; the Device, DocumentReference and Provenance in
//!   `provenance`).
//! - [`store`]: reads the exports those are made from.
//! - [`search`]: the subset of FHIR search answered (pure parsing, Bundles).
//! - [`serve`]: the `/fhir` routes, behind the logins, every read audited.
//! - [`push`]: the durable queue (`fhir_queue`, filled by a trigger in the same transaction as
//!   the record) drained to `[fhir] push_url` with conditional updates.

pub mod config;
pub mod mapping;
mod provenance;
pub mod push;
pub mod resources;
pub mod search;
pub mod serve;
pub mod store;

pub use config::FhirConfig;

#[cfg(test)]
mod tests;
