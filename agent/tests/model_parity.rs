//! tract vs onnxruntime: the committed model run by the agent's loader must reproduce the
//! reference outputs that `training/export.py` wrote with onnxruntime (models/reference/).

use std::path::{Path, PathBuf};

use agent::recognize::model::Model;
use tract_onnx::prelude::*;

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// A minimal `.npy` reader (little-endian `<f4` / `<i8`, C order), enough for the references.
fn npy(name: &str) -> Tensor {
    let path = models_dir().join("reference").join(format!("{name}.npy"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{name}: not npy");
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape_str = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_str
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let body = &bytes[start + header_len..];
    if header.contains("'<f4'") {
        let v: Vec<f32> = body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Tensor::from_shape(&shape, &v).unwrap()
    } else if header.contains("'<i8'") {
        let v: Vec<i64> = body
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Tensor::from_shape(&shape, &v).unwrap()
    } else {
        panic!("{name}: unsupported dtype in {header}")
    }
}

fn max_diff(name: &str, got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.shape(), want.shape(), "{name}: shape");
    let g = got.to_plain_array_view::<f32>().unwrap();
    let w = want.to_plain_array_view::<f32>().unwrap();
    g.iter()
        .zip(w)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

/// Tolerance: float graphs, and `int8-weights` (int8 constants that both runtimes dequantize to
/// the same floats), agree to ~1e-5. Forms that quantize activations round differently in the
/// two runtimes, so they get a looser bound.
fn tolerance(model: &Model) -> f32 {
    match model.spec().variant.as_str() {
        "float32" | "int8-weights" => 1e-4,
        _ => 2e-2,
    }
}

#[test]
fn tract_matches_onnxruntime_references() {
    let model = Model::load(models_dir().as_path(), 1).expect("load model");
    let tol = tolerance(&model);
    let image = npy("image");
    let shape = image.shape().to_vec();
    let per = shape[2] * shape[3];
    let flat: Vec<f32> = image
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect();
    let crops: Vec<Vec<f32>> = flat.chunks(per).map(<[f32]>::to_vec).collect();

    let cross = model.encode(&crops).expect("encoder");
    let d = max_diff("cross_k", &cross.0.clone().into_tensor(), &npy("cross_k"));
    assert!(d < tol, "cross_k differs by {d}");
    let d = max_diff("cross_v", &cross.1.clone().into_tensor(), &npy("cross_v"));
    assert!(d < tol, "cross_v differs by {d}");

    // Feed the reference cross K/V so each graph is checked on its own inputs.
    let cross = (npy("cross_k").into_tvalue(), npy("cross_v").into_tvalue());
    let mut cache = model.empty_cache(crops.len()).unwrap();
    for step in 0..3 {
        let tokens = npy(&format!("step{step}_token"));
        let tokens: Vec<i64> = tokens
            .to_plain_array_view::<i64>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        if step == 2 {
            let d = max_diff(
                "self_k_in",
                &cache.0.clone().into_tensor(),
                &npy("step2_self_k_in"),
            );
            assert!(d < tol, "self_k before step 2 differs by {d}");
        }
        let (logits, k, v) = model
            .step(&tokens, step, cache, &cross)
            .expect("decoder step");
        let d = max_diff("logits", &logits, &npy(&format!("step{step}_logits")));
        assert!(d < tol, "step {step} logits differ by {d}");
        if step == 2 {
            let d = max_diff(
                "self_k_out",
                &k.clone().into_tensor(),
                &npy("step2_self_k_out"),
            );
            assert!(d < tol, "self_k_out differs by {d}");
            let d = max_diff(
                "self_v_out",
                &v.clone().into_tensor(),
                &npy("step2_self_v_out"),
            );
            assert!(d < tol, "self_v_out differs by {d}");
        }
        cache = (k, v);
    }
}

#[test]
fn model_version_is_the_hash_of_the_shipped_files() {
    use sha2::{Digest, Sha256};
    let dir = models_dir();
    let model = Model::load(dir.as_path(), 1).expect("load model");
    let mut h = Sha256::new();
    for f in ["encoder.onnx", "decoder.onnx", "model.json"] {
        h.update(std::fs::read(dir.join(f)).unwrap());
    }
    assert_eq!(model.model_version(), &hex::encode(h.finalize())[..12]);
}

#[test]
fn read_rejects_mismatched_inputs_and_handles_empty() {
    let model = Model::load(models_dir().as_path(), 1).expect("load model");
    assert!(model.read(&[], &[]).unwrap().is_empty());
    let c = agent::recognize::decode::FieldConstraint::unconstrained();
    assert!(
        model
            .read(&[vec![1.0; 10]], std::slice::from_ref(&c))
            .is_err(),
        "wrong crop size"
    );
    assert!(
        model.read(&[vec![1.0; 32 * 192]], &[]).is_err(),
        "count mismatch"
    );
}
