//! Training crops: the command's output layout (`crops/<n>.png`, `labels.jsonl`), 8-bit crops of
//! the model's input size with ink, texts in the field's alphabet or an absent marker, every
//! template and field drawn over a run, and determinism by seed whatever the thread count.

mod util;

use std::collections::BTreeSet;

use rand::SeedableRng;
use sim::crops::write_crops;
use sim::Simulator;
use vision::crop::MIN_CONTRAST;
use vision::{CROP_H, CROP_W};

#[test]
fn crops_smoke() {
    let (set, fonts) = util::templates();
    let sim = Simulator::new(&set, &fonts).expect("simulator");
    for hard in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = write_crops(&sim, dir.path(), 30, 4, hard, 2).expect("crops");
        assert_eq!(n, 30);
        let labels = std::fs::read_to_string(dir.path().join("labels.jsonl")).expect("labels");
        let lines: Vec<serde_json::Value> = labels
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines.len(), 30);
        for (i, l) in lines.iter().enumerate() {
            let file = l["file"].as_str().expect("file");
            assert_eq!(file, format!("crops/{:06}.png", i + 1));
            let img = image::open(dir.path().join(file)).expect("png");
            assert_eq!((img.width(), img.height()), (CROP_W as u32, CROP_H as u32));
            assert_eq!(img.color(), image::ColorType::L8);
            let t = set
                .get(l["template"].as_str().expect("template"))
                .expect("known template");
            let f = t
                .field(l["field"].as_str().expect("field"))
                .expect("known field");
            let text = l["text"].as_str().expect("text");
            let alphabet = f.spec.grammar.alphabet();
            let ok = f.spec.absent.iter().any(|a| a == text)
                || text.chars().all(|c| alphabet.contains(c));
            assert!(
                ok,
                "{} {}: {text:?} outside the alphabet {alphabet:?}",
                t.id, f.spec.name
            );
        }
        // The same seed gives the same crops with another thread count.
        let again = tempfile::tempdir().expect("tempdir");
        write_crops(&sim, again.path(), 30, 4, hard, 1).expect("crops");
        assert_eq!(
            labels,
            std::fs::read_to_string(again.path().join("labels.jsonl")).expect("labels")
        );
        for i in [1, 17, 30] {
            let name = format!("crops/{i:06}.png");
            assert_eq!(
                std::fs::read(dir.path().join(&name)).ok(),
                std::fs::read(again.path().join(&name)).ok(),
                "{name}"
            );
        }
    }
}

#[test]
fn crops_show_ink_and_cover_every_template() {
    let (set, fonts) = util::templates();
    let sim = Simulator::new(&set, &fonts).expect("simulator");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let mut seen = BTreeSet::new();
    let mut inkless = 0;
    let n = 40 * set.len();
    for _ in 0..n {
        let c = sim.crop(&mut rng, false).expect("crop");
        assert_eq!(c.pixels.len(), CROP_H * CROP_W);
        if c.contrast < MIN_CONTRAST {
            eprintln!(
                "inkless: {} {} {:?} contrast {:.3}",
                c.template, c.field, c.text, c.contrast
            );
            inkless += 1;
        }
        seen.insert(c.template);
    }
    assert_eq!(seen.len(), set.len(), "every template drawn");
    assert!(inkless * 50 < n, "{inkless} of {n} crops without ink");
}
