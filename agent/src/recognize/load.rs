//! Loading the [`Recognizer`] once at start-up: templates, their plates and the model (the
//! slow part). The one place that does it, for `agent run` ([`from_settings`]) and for
//! `agent recognize` / the benchmarks ([`load`]).

use std::path::{Path, PathBuf};

use record::{TemplateError, TemplateSet};

use super::model::{Model, ModelError, ModelPaths};
use super::recognizer::{Recognizer, RecognizerError};
use crate::config::Settings;

/// What failed to load, naming the folder.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The templates folder could not be read.
    #[error("templates in {dir}: {source}")]
    Templates {
        /// The folder.
        dir: PathBuf,
        /// Why.
        source: TemplateError,
    },
    /// No template matches the configured device type.
    #[error("no templates for device_type {device_type:?} in {dir}")]
    NoTemplates {
        /// The configured type (`auto` when unset).
        device_type: String,
        /// The folder.
        dir: PathBuf,
    },
    /// The model could not be loaded.
    #[error("model in {dir}: {source}")]
    Model {
        /// The model folder.
        dir: PathBuf,
        /// Why.
        source: ModelError,
    },
    /// A template's plate or anchors are unusable.
    #[error("plates of {dir}: {source}")]
    Plates {
        /// The templates folder.
        dir: PathBuf,
        /// Why (boxed: the layout error is large).
        source: Box<RecognizerError>,
    },
}

/// Loads the templates of `templates_dir` (only those of `device_type` when given) and the model
/// at `model_path` (its folder, or any file inside it) with `model_threads` threads.
pub fn load(
    templates_dir: &Path,
    model_path: &Path,
    device_type: Option<&str>,
    model_threads: usize,
) -> Result<Recognizer, LoadError> {
    let all = TemplateSet::load_dir(templates_dir).map_err(|source| LoadError::Templates {
        dir: templates_dir.to_owned(),
        source,
    })?;
    let templates = match device_type {
        None => all,
        Some(device_type) => {
            let mut only = TemplateSet::default();
            for t in all.iter().filter(|t| t.device_type == device_type) {
                only.insert(t.clone());
            }
            only
        }
    };
    if templates.is_empty() {
        return Err(LoadError::NoTemplates {
            device_type: device_type.unwrap_or("auto").to_owned(),
            dir: templates_dir.to_owned(),
        });
    }
    let model_dir = if model_path.is_file() {
        model_path.parent().unwrap_or(Path::new(".")).to_owned()
    } else {
        model_path.to_owned()
    };
    let model = Model::load(ModelPaths::in_dir(&model_dir), model_threads).map_err(|source| {
        LoadError::Model {
            dir: model_dir.clone(),
            source,
        }
    })?;
    Recognizer::new(templates, model).map_err(|source| LoadError::Plates {
        dir: templates_dir.to_owned(),
        source: Box::new(source),
    })
}

/// The recognizer `agent run` uses: `[recognize]` paths, threads and pixel cap, and the
/// templates of the configured `device_type`.
pub fn from_settings(settings: &Settings) -> Result<Recognizer, LoadError> {
    let r = &settings.recognize;
    let recognizer = load(
        &r.templates_dir,
        &r.model_path,
        settings.device_type.as_deref(),
        r.model_threads,
    )?
    .with_max_pixels(r.max_pixels);
    tracing::info!(
        templates = recognizer.templates().len(),
        model_version = recognizer.model_version(),
        "Recognizer loaded."
    );
    Ok(recognizer)
}
