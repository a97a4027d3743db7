//! templates: every template version the hub has seen stays valid.
//!
//! A record names the template id and version it was read with, and is checked against that
//! exact version. During a rollout old and new agents send records of both versions for weeks,
//! and a hub may be upgraded before or after its agents, so the hub keeps every version it has
//! ever loaded in PostgreSQL (`template_versions`):
//!
//! - at start, each template of the hub's folder is written there ([`sync`]); a version already
//!   there keeps its first-seen time, and takes the folder's text if it changed (a WARN: a
//!   template's content must not change without a version bump);
//! - the validate stage reads every stored version ([`load`]) into a [`Catalog`], and the hub
//!   reloads it every minute, so a version that another hub of a scale-out group brought is
//!   known here too;
//! - a record whose template id or version is in none of them is *deferred*, not rejected: the
//!   agent keeps it and sends it again until the hub knows that version.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use record::{Template, TemplateError, TemplateSet};
use tokio_postgres::Client;
use tracing::{info, warn};

/// One template file of the hub's folder: the parsed template and its text.
#[derive(Debug, Clone)]
pub struct Source {
    /// The template.
    pub template: Template,
    /// The file's text, as stored.
    pub body: String,
}

/// Reads every `*.toml` template in `dir`, with its text.
pub fn read_folder(dir: &Path) -> Result<Vec<Source>, TemplateError> {
    // The same checks as the agent's loader (ids, fields, at least one template).
    TemplateSet::load_dir(dir)?;
    let io = |file: &Path, e: std::io::Error| TemplateError {
        file: file.display().to_string(),
        field: None,
        problem: e.to_string(),
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let body = std::fs::read_to_string(&p).map_err(|e| io(&p, e))?;
            let template = Template::from_toml(&p, &body)?;
            Ok(Source { template, body })
        })
        .collect()
}

/// Template versions by `(id, version)`.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    map: HashMap<(String, u32), Arc<Template>>,
}

impl Versions {
    /// The versions of a template set (one per id).
    pub fn of_set(set: &TemplateSet) -> Self {
        let mut v = Self::default();
        for t in set.iter() {
            v.insert(t.clone());
        }
        v
    }

    /// Adds (or replaces) one version.
    pub fn insert(&mut self, t: Template) {
        self.map.insert((t.id.clone(), t.version), Arc::new(t));
    }

    /// The template `id` at `version`.
    pub fn get(&self, id: &str, version: u32) -> Option<&Arc<Template>> {
        self.map.get(&(id.to_owned(), version))
    }

    /// The template `id` at `version` as a record's `template_version` column holds it
    /// (PostgreSQL `integer`); a negative version is none.
    pub fn get_stored(&self, id: &str, version: i32) -> Option<&Arc<Template>> {
        self.get(id, u32::try_from(version).ok()?)
    }

    /// The versions known for `id`, ascending.
    pub fn versions_of(&self, id: &str) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .map
            .keys()
            .filter(|(i, _)| i == id)
            .map(|(_, v)| *v)
            .collect();
        v.sort_unstable();
        v
    }

    /// How many versions.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The versions the validate stage checks against, replaced whole when reloaded.
#[derive(Debug, Default)]
pub struct Catalog {
    current: RwLock<Arc<Versions>>,
}

impl Catalog {
    /// A catalog holding `versions`.
    pub fn new(versions: Versions) -> Self {
        Self {
            current: RwLock::new(Arc::new(versions)),
        }
    }

    /// The versions now.
    pub fn snapshot(&self) -> Arc<Versions> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Adds every version of `more` (a version is never dropped).
    pub fn merge(&self, more: Versions) {
        let mut next = (*self.snapshot()).clone();
        for (_, t) in more.map {
            next.map.insert((t.id.clone(), t.version), t);
        }
        match self.current.write() {
            Ok(mut g) => *g = Arc::new(next),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(next),
        }
    }
}

/// Writes the folder's templates into `template_versions`; returns how many were new.
pub async fn sync(client: &Client, sources: &[Source]) -> Result<usize, tokio_postgres::Error> {
    let mut new = 0;
    for s in sources {
        let t = &s.template;
        let sha = record::ids::sha256_hex(s.body.as_bytes());
        let version = i32::try_from(t.version).unwrap_or(i32::MAX);
        let before = client
            .query_opt(
                "SELECT body_sha256 FROM template_versions WHERE template_id = $1 AND version = $2",
                &[&t.id, &version],
            )
            .await?;
        match before {
            None => {
                client
                    .execute(
                        "INSERT INTO template_versions (template_id, version, device_type, \
                         firmware, body, body_sha256) VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT DO NOTHING",
                        &[&t.id, &version, &t.device_type, &t.firmware, &s.body, &sha],
                    )
                    .await?;
                info!(template = %t.id, version = t.version, "New template version stored.");
                new += 1;
            }
            Some(row) if row.get::<_, String>(0) != sha => {
                warn!(
                    template = %t.id,
                    version = t.version,
                    "This template's text differs from the one first stored under the same \
                     version; the folder's text now applies. Bump `version` whenever a template changes."
                );
                client
                    .execute(
                        "UPDATE template_versions SET body = $3, body_sha256 = $4, \
                         updated_at = now() WHERE template_id = $1 AND version = $2",
                        &[&t.id, &version, &s.body, &sha],
                    )
                    .await?;
            }
            Some(_) => {}
        }
    }
    Ok(new)
}

/// The catalog a hub (or `hub rejects replay`) checks against: the folder's templates written
/// into `template_versions` ([`sync`]), then every stored version read back ([`load`]).
pub async fn open_catalog(
    client: &Client,
    sources: &[Source],
) -> Result<Catalog, tokio_postgres::Error> {
    sync(client, sources).await?;
    Ok(Catalog::new(load(client).await?))
}

/// Every stored version. A stored text that no longer parses (a template format this hub does
/// not read) is logged and left out.
pub async fn load(client: &Client) -> Result<Versions, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT template_id, version, body FROM template_versions ORDER BY template_id, version",
            &[],
        )
        .await?;
    let mut v = Versions::default();
    for row in rows {
        let (id, version, body): (String, i32, String) = (row.get(0), row.get(1), row.get(2));
        let name = PathBuf::from(format!("{id}.toml"));
        match Template::from_toml(&name, &body) {
            Ok(t) if i64::from(t.version) == i64::from(version) => v.insert(t),
            Ok(t) => warn!(
                template = %id,
                version,
                text_version = t.version,
                "A stored template's text names another version; left out."
            ),
            Err(error) => warn!(
                template = %id,
                version,
                %error,
                "A stored template version does not parse; left out."
            ),
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates")
    }

    #[test]
    fn the_catalog_keeps_every_version_it_was_given() {
        let sources = read_folder(&templates_dir()).unwrap();
        assert!(!sources.is_empty());
        let mut older = sources[0].template.clone();
        let id = older.id.clone();
        let current = older.version;
        older.version = current + 7;
        let mut first = Versions::default();
        for s in &sources {
            first.insert(s.template.clone());
        }
        let catalog = Catalog::new(first);
        let mut more = Versions::default();
        more.insert(older);
        catalog.merge(more);
        let now = catalog.snapshot();
        assert_eq!(now.versions_of(&id), vec![current, current + 7]);
        assert!(now.get(&id, current).is_some());
        assert!(now.get(&id, current + 1).is_none());
        assert_eq!(now.len(), sources.len() + 1);
    }
}
