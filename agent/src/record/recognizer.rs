//! The recognizer, loaded once at start-up (templates, plates and model: the slow part) and
//! then called per export by the record stage's workers.

use std::path::Path;
use std::sync::Arc;

use record::TemplateSet;

use super::stage::RecognizeFn;
use crate::config::Settings;
use crate::recognize::model::{Model, ModelPaths};
use crate::recognize::Recognizer;

/// Loads templates (only those of `device_type` unless it is `auto`) and the model, and returns
/// the per-export recognition call. The error names what failed to load.
pub fn load(settings: &Settings) -> Result<Arc<RecognizeFn>, String> {
    let r = &settings.recognize;
    let all = TemplateSet::load_dir(&r.templates_dir)
        .map_err(|e| format!("templates in {}: {e}", r.templates_dir.display()))?;
    let templates = match &settings.device_type {
        None => all,
        Some(device_type) => {
            let mut only = TemplateSet::default();
            for t in all.iter().filter(|t| t.device_type == *device_type) {
                only.insert(t.clone());
            }
            only
        }
    };
    if templates.is_empty() {
        return Err(format!(
            "no templates for device_type {:?} in {}",
            settings.device_type.as_deref().unwrap_or("auto"),
            r.templates_dir.display()
        ));
    }
    let model_dir = if r.model_path.is_file() {
        r.model_path.parent().unwrap_or(Path::new(".")).to_owned()
    } else {
        r.model_path.clone()
    };
    let model = Model::load(ModelPaths::in_dir(&model_dir), r.model_threads)
        .map_err(|e| format!("model in {}: {e}", model_dir.display()))?;
    let recognizer = Recognizer::new(templates, model)
        .map_err(|e| format!("plates of {}: {e}", r.templates_dir.display()))?
        .with_max_pixels(r.max_pixels);
    tracing::info!(
        templates = recognizer.templates().len(),
        model_version = recognizer.model_version(),
        "Recognizer loaded."
    );
    Ok(Arc::new(move |bytes: &[u8], name: &str| {
        recognizer
            .recognize(bytes, name)
            .map(Into::into)
            .map_err(Into::into)
    }))
}
