//! The field reader: loads the shipped encoder/decoder ONNX pair once and reads a whole
//! export's field crops per call.
//!
//! Contract: `models/README.md` (vocabulary, tensor names and shapes, `model.json`, version).
//! [`Model::load`] parses, optimises and plans both graphs once, at start-up; [`Model::read`]
//! then runs **one** batched encoder pass over all crops of an export and a batched greedy
//! decode with the self-attention cache, at most `MAX_CHARS + 1` decoder runs per export.
//! Each step only tokens allowed by that field's [`FieldConstraint`] are eligible
//! (see [`super::decode`]).
//!
//! The model version is the first 12 hex digits of SHA-256 over `encoder.onnx`,
//! `decoder.onnx` and `model.json`, in that order: the exact bytes that were loaded.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

use super::decode::{choose, Calibration, FieldConstraint, Reading, Step, MAX_CHARS};

/// Encoder graph file name inside the model folder.
pub const ENCODER_FILE: &str = "encoder.onnx";
/// Decoder step graph file name.
pub const DECODER_FILE: &str = "decoder.onnx";
/// Manifest file name.
pub const MANIFEST_FILE: &str = "model.json";

const BOS: i64 = 1;
const EOS: usize = 2;

/// Why the model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A model file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `model.json` is malformed or describes another contract.
    #[error("model manifest {path}: {message}")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// tract could not load, optimise or plan a graph.
    #[error("loading {path}: {message}")]
    Load {
        /// The graph file.
        path: PathBuf,
        /// tract's error chain.
        message: String,
    },
    /// The caller passed inputs that do not fit the contract.
    #[error("bad input: {0}")]
    Input(String),
    /// tract failed while running a graph.
    #[error("running the {graph}: {message}")]
    Run {
        /// `encoder` or `decoder`.
        graph: &'static str,
        /// tract's error chain.
        message: String,
    },
}

/// `model.json`: the dimensions the Rust side needs, the variant and the calibration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Manifest format (1).
    pub format: u32,
    /// Characters of token ids 3.. in order.
    pub vocab: String,
    /// Longest text.
    pub max_chars: usize,
    /// Decoder layers (L).
    pub dec_layers: usize,
    /// Attention heads (H).
    pub heads: usize,
    /// Width of one head (Dh).
    pub head_dim: usize,
    /// Encoder tokens (S).
    pub enc_tokens: usize,
    /// Crop height.
    pub crop_h: usize,
    /// Crop width.
    pub crop_w: usize,
    /// Which form of the weights is shipped (`float32`, `int8-...`).
    pub variant: String,
    /// Whether tract must ignore the graphs' value_info (some quantized graphs need it).
    #[serde(default)]
    pub ignore_value_info: bool,
    /// Confidence calibration.
    #[serde(default)]
    pub calibration: Calibration,
}

/// Where the three model files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPaths {
    /// `encoder.onnx`.
    pub encoder: PathBuf,
    /// `decoder.onnx`.
    pub decoder: PathBuf,
    /// `model.json`.
    pub manifest: PathBuf,
}

impl ModelPaths {
    /// The standard file names inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            encoder: dir.join(ENCODER_FILE),
            decoder: dir.join(DECODER_FILE),
            manifest: dir.join(MANIFEST_FILE),
        }
    }
}

impl From<&Path> for ModelPaths {
    fn from(dir: &Path) -> Self {
        Self::in_dir(dir)
    }
}

type Plan = Arc<TypedRunnableModel>;

/// The loaded, optimised reader. Cheap to share behind an `Arc`; `read` takes `&self`.
#[derive(Debug)]
pub struct Model {
    encoder: Plan,
    decoder: Plan,
    spec: ModelSpec,
    chars: Vec<Option<char>>,
    version: String,
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_owned(),
        source,
    })
}

fn plan(bytes: &[u8], path: &Path, spec: &ModelSpec, threads: usize) -> Result<Plan, ModelError> {
    let err = |e: TractError| ModelError::Load {
        path: path.to_owned(),
        message: format!("{e:#}"),
    };
    let model = tract_onnx::onnx()
        .with_ignore_value_info(spec.ignore_value_info)
        .model_for_read(&mut &bytes[..])
        .map_err(err)?
        .into_optimized()
        .map_err(err)?;
    let options = RunOptions {
        executor: executor(threads),
        ..RunOptions::default()
    };
    model.into_runnable_with_options(&options).map_err(err)
}

/// Keeps tract off `wmic.exe` (call once at process start, before any thread is spawned).
///
/// tract-linalg 0.23 sizes its matrix-product blocking from the CPU caches, and on Windows it
/// reads them by running `wmic cpu get L2CacheSize,L3CacheSize` at the first product, that is
/// at the agent's first recognition. That child process is a hidden dependency on WMI from a
/// service; `wmic` is deprecated and no longer installed by default on Windows 11 24H2; and
/// under Wine it intermittently never exits when several processes start together, so the
/// agent waited for ever on its first export, with nothing in its log (#15). This drops the
/// folders holding `wmic.exe` (`System32\Wbem`) from this process's `PATH`, so the probe fails
/// at once and tract uses its default cache sizes (the model's products are small; the readings
/// are the same, checked by the Wine test that compares `agent.exe recognize` with Linux).
#[cfg(windows)]
pub fn keep_tract_off_wmic() {
    let Some(path) = std::env::var_os("PATH") else {
        return;
    };
    let kept: Vec<std::path::PathBuf> = std::env::split_paths(&path)
        .filter(|dir| !dir.join("wmic.exe").is_file())
        .collect();
    if let Ok(joined) = std::env::join_paths(kept) {
        std::env::set_var("PATH", joined);
    }
}

/// tract runs its matrix products on one thread unless the `multithread-mm` feature of
/// tract-linalg is enabled; `threads` is honoured only then.
fn executor(threads: usize) -> Option<multithread::Executor> {
    let _ = threads;
    None
}

impl Model {
    /// Loads, optimises and plans the reader from a folder (or explicit [`ModelPaths`]),
    /// once. `threads` is the intra-op thread count (see `executor`).
    pub fn load(paths: impl Into<ModelPaths>, threads: usize) -> Result<Model, ModelError> {
        let paths = paths.into();
        let enc_bytes = read_bytes(&paths.encoder)?;
        let dec_bytes = read_bytes(&paths.decoder)?;
        let man_bytes = read_bytes(&paths.manifest)?;
        let manifest_err = |message: String| ModelError::Manifest {
            path: paths.manifest.clone(),
            message,
        };
        let spec: ModelSpec =
            serde_json::from_slice(&man_bytes).map_err(|e| manifest_err(e.to_string()))?;
        if spec.format != 1 || spec.max_chars != MAX_CHARS {
            return Err(manifest_err(format!(
                "format {} / max_chars {} (this agent reads format 1, {MAX_CHARS} chars)",
                spec.format, spec.max_chars
            )));
        }
        let mut hasher = Sha256::new();
        for bytes in [&enc_bytes, &dec_bytes, &man_bytes] {
            hasher.update(bytes);
        }
        let version = hex::encode(hasher.finalize())[..12].to_owned();
        let chars = [None, None, None]
            .into_iter()
            .chain(spec.vocab.chars().map(Some))
            .collect();
        Ok(Model {
            encoder: plan(&enc_bytes, &paths.encoder, &spec, threads)?,
            decoder: plan(&dec_bytes, &paths.decoder, &spec, threads)?,
            spec,
            chars,
            version,
        })
    }

    /// First 12 hex digits of SHA-256 over the loaded files (see the module doc).
    pub fn model_version(&self) -> &str {
        &self.version
    }

    /// The manifest.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Runs the encoder on a batch of normalised crops: `(cross_k, cross_v)`, each
    /// `[L, B, H, S, Dh]`.
    pub fn encode(&self, crops: &[Vec<f32>]) -> Result<(TValue, TValue), ModelError> {
        let (h, w) = (self.spec.crop_h, self.spec.crop_w);
        let mut data = Vec::with_capacity(crops.len() * h * w);
        for (i, crop) in crops.iter().enumerate() {
            if crop.len() != h * w {
                return Err(ModelError::Input(format!(
                    "crop {i} has {} values, expected {h}x{w}",
                    crop.len()
                )));
            }
            data.extend_from_slice(crop);
        }
        let image = tensor(&[crops.len(), 1, h, w], &data)?;
        let mut out = run(&self.encoder, "encoder", tvec![image.into()])?;
        if out.len() != 2 {
            return Err(run_err(
                "encoder",
                format!("{} outputs, expected 2", out.len()),
            ));
        }
        let cv = out.pop().expect("two outputs");
        let ck = out.pop().expect("two outputs");
        Ok((ck, cv))
    }

    /// One decoder step: `(logits [B, V], self_k_out, self_v_out)`.
    pub fn step(
        &self,
        tokens: &[i64],
        position: usize,
        cache: (TValue, TValue),
        cross: &(TValue, TValue),
    ) -> Result<(Tensor, TValue, TValue), ModelError> {
        let token = tensor(&[tokens.len()], tokens)?;
        let position = tensor(&[1], &[position as i64])?;
        let inputs = tvec![
            token.into(),
            position.into(),
            cache.0,
            cache.1,
            cross.0.clone(),
            cross.1.clone()
        ];
        let mut out = run(&self.decoder, "decoder", inputs)?;
        if out.len() != 3 {
            return Err(run_err(
                "decoder",
                format!("{} outputs, expected 3", out.len()),
            ));
        }
        let v = out.pop().expect("three outputs");
        let k = out.pop().expect("three outputs");
        let logits = out.pop().expect("three outputs").into_tensor();
        Ok((logits, k, v))
    }

    /// An empty self-attention cache for a batch of `batch` sequences.
    pub fn empty_cache(&self, batch: usize) -> Result<(TValue, TValue), ModelError> {
        let s = &self.spec;
        let shape = [s.dec_layers, batch, s.heads, 0, s.head_dim];
        let zero = || Tensor::zero::<f32>(&shape).map_err(|e| ModelError::Input(format!("{e:#}")));
        Ok((zero()?.into(), zero()?.into()))
    }

    /// Reads every crop of one export: one encoder pass, then batched constrained greedy
    /// decoding. `constraints[i]` applies to `crops[i]`. A sequence that can neither continue
    /// nor end within its constraint stops with confidence 0.
    pub fn read(
        &self,
        crops: &[Vec<f32>],
        constraints: &[FieldConstraint],
    ) -> Result<Vec<Reading>, ModelError> {
        if crops.len() != constraints.len() {
            return Err(ModelError::Input(format!(
                "{} crops but {} constraints",
                crops.len(),
                constraints.len()
            )));
        }
        if crops.is_empty() {
            return Ok(Vec::new());
        }
        let cross = self.encode(crops)?;
        let mut cache = self.empty_cache(crops.len())?;
        let mut seqs: Vec<Seq> = vec![Seq::default(); crops.len()];
        let mut tokens = vec![BOS; crops.len()];
        for position in 0..=MAX_CHARS {
            let (logits, k, v) = self.step(&tokens, position, cache, &cross)?;
            let logits = logits
                .to_plain_array_view::<f32>()
                .map_err(|e| run_err("decoder", format!("{e:#}")))?
                .into_dimensionality::<tract_ndarray::Ix2>()
                .map_err(|e| run_err("decoder", e.to_string()))?;
            for (i, seq) in seqs.iter_mut().enumerate().filter(|(_, s)| !s.done) {
                let row = logits.row(i);
                let row = row
                    .as_slice()
                    .ok_or_else(|| run_err("decoder", "strided logits".into()))?;
                match choose(row, &self.chars, EOS, &seq.text, &constraints[i]) {
                    Step::Char(c, p) => {
                        seq.text.push(c);
                        seq.probs.push(p);
                        seq.p *= p;
                        tokens[i] = self.token_of(c);
                    }
                    Step::End(p) => {
                        seq.p *= p;
                        seq.done = true;
                        tokens[i] = EOS as i64;
                    }
                    Step::Stuck => {
                        seq.p = 0.0;
                        seq.done = true;
                        tokens[i] = EOS as i64;
                    }
                }
            }
            if seqs.iter().all(|s| s.done) {
                break;
            }
            cache = (k, v);
        }
        let cal = self.spec.calibration;
        Ok(seqs
            .into_iter()
            .map(|s| Reading {
                confidence: if s.done && s.p > 0.0 {
                    cal.confidence(s.p)
                } else {
                    0.0
                },
                text: s.text,
                char_probs: s.probs,
            })
            .collect())
    }

    fn token_of(&self, c: char) -> i64 {
        self.chars.iter().position(|x| *x == Some(c)).unwrap_or(EOS) as i64
    }
}

#[derive(Debug, Clone)]
struct Seq {
    text: String,
    probs: Vec<f32>,
    p: f32,
    done: bool,
}

impl Default for Seq {
    fn default() -> Self {
        Self {
            text: String::new(),
            probs: Vec::new(),
            p: 1.0,
            done: false,
        }
    }
}

fn tensor<T: Datum + Copy>(shape: &[usize], data: &[T]) -> Result<Tensor, ModelError> {
    Tensor::from_shape(shape, data).map_err(|e| ModelError::Input(format!("{e:#}")))
}

fn run(plan: &Plan, graph: &'static str, inputs: TVec<TValue>) -> Result<TVec<TValue>, ModelError> {
    plan.run(inputs)
        .map_err(|e| run_err(graph, format!("{e:#}")))
}

fn run_err(graph: &'static str, message: String) -> ModelError {
    ModelError::Run { graph, message }
}
