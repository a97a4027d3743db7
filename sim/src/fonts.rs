//! Font lookup: a font is named by its file name (`DejaVuSansMono-Bold.ttf`) and found by a
//! recursive walk of the font directories, first match wins in directory order.
//!
//! Default directories: `/usr/share/fonts/truetype` and `/usr/share/fonts/opentype`, after any
//! directories named by the `EXAMLINK_FONT_DIR` environment variable (`:`-separated) and the
//! caller's own (CLI `--font-dir`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ab_glyph::FontArc;

/// Environment variable naming extra font directories (`:`-separated), searched first.
pub const FONT_DIR_ENV: &str = "EXAMLINK_FONT_DIR";

/// Directories searched after the caller's and the environment's.
pub const DEFAULT_FONT_DIRS: &[&str] = &["/usr/share/fonts/truetype", "/usr/share/fonts/opentype"];

/// A font that could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum FontError {
    /// No directory holds the file.
    #[error("template {template}, field {field}: font {font:?} not found in {dirs:?} (install the Debian font package or set {FONT_DIR_ENV})")]
    Missing {
        /// Template id.
        template: String,
        /// Field name.
        field: String,
        /// Font file name.
        font: String,
        /// Directories searched.
        dirs: Vec<PathBuf>,
    },
    /// The file exists but is not a usable font.
    #[error("font {path}: {problem}")]
    Unreadable {
        /// The font file.
        path: PathBuf,
        /// Why.
        problem: String,
    },
}

/// The font directories and an index of the font files in them.
#[derive(Debug, Clone)]
pub struct FontDirs {
    dirs: Vec<PathBuf>,
    files: BTreeMap<String, PathBuf>,
}

impl FontDirs {
    /// `extra` directories first, then `EXAMLINK_FONT_DIR`, then the defaults. Missing
    /// directories are skipped.
    pub fn new(extra: &[PathBuf]) -> Self {
        let mut dirs: Vec<PathBuf> = extra.to_vec();
        if let Ok(env) = std::env::var(FONT_DIR_ENV) {
            dirs.extend(env.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
        }
        dirs.extend(DEFAULT_FONT_DIRS.iter().map(PathBuf::from));
        let mut files = BTreeMap::new();
        for d in &dirs {
            index(d, &mut files, 0);
        }
        Self { dirs, files }
    }

    /// The directories searched, in order.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The path of font file `name`, if any directory holds it.
    pub fn find(&self, name: &str) -> Option<&Path> {
        self.files.get(name).map(PathBuf::as_path)
    }

    /// Reads font file `name` for `template`/`field` (named in the error when it is missing) and
    /// checks that it parses.
    pub fn read(&self, name: &str, template: &str, field: &str) -> Result<Vec<u8>, FontError> {
        let font = self.load(name, template, field)?;
        drop(font);
        let path = self.find(name).unwrap_or(Path::new(name));
        std::fs::read(path).map_err(|e| FontError::Unreadable {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })
    }

    /// Loads font `name` for `template`/`field` (named in the error when it is missing).
    pub fn load(&self, name: &str, template: &str, field: &str) -> Result<FontArc, FontError> {
        let path = self.find(name).ok_or_else(|| FontError::Missing {
            template: template.into(),
            field: field.into(),
            font: name.into(),
            dirs: self.dirs.clone(),
        })?;
        let unreadable = |problem: String| FontError::Unreadable {
            path: path.to_path_buf(),
            problem,
        };
        let bytes = std::fs::read(path).map_err(|e| unreadable(e.to_string()))?;
        FontArc::try_from_vec(bytes).map_err(|e| unreadable(e.to_string()))
    }
}

fn index(dir: &Path, files: &mut BTreeMap<String, PathBuf>, depth: usize) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if depth < 8 {
                index(&p, files, depth + 1);
            }
        } else if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
            files.entry(name.to_owned()).or_insert(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_font_names_template_field_and_font() {
        let dirs = FontDirs::new(&[]);
        let err = dirs
            .load("NoSuchFont-Bold.ttf", "autoref_fw2", "r_sph")
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("autoref_fw2")
                && msg.contains("r_sph")
                && msg.contains("NoSuchFont-Bold.ttf"),
            "{msg}"
        );
    }
}
