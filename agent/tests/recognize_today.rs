//! Exports made today, at any hour, are read `ok` (issue #11): synthetic exports of every layout
//! (committed templates, fixed seeds) stamped with today's UTC date and with 2026-12-01, at
//! 23:59, 00:01 and times spread over the day, through the whole recognizer (committed model).
//! Whenever the exam date or time is read right, its status must be `ok`: neither the date nor
//! the hour may send a right value to review.
//!
//! Also the measurement behind the issue's figure: `EXAMLINK_TODAY_N=200` renders that many
//! exports per layout (default 4), and `EXAMLINK_TODAY_TEMPLATES=DIR` reads them with another
//! templates folder (e.g. version 1: `git archive HEAD~N templates | tar -x -C /tmp/v1`), which
//! reports instead of asserting. It prints, per layout, how many exam dates and times went to
//! review and why.
//!
//! ```text
//! EXAMLINK_TODAY_N=200 EXAMLINK_TODAY_TEMPLATES=/tmp/v1/templates \
//!     cargo test --release -p agent --test recognize_today -- --nocapture
//! ```

mod recognize_common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use agent::recognize::command::load;
use rand::Rng;
use recognize_common as common;
use record::{FieldStatus, TemplateSet};
use sim::render::export_rng;
use sim::{FontDirs, NaiveDate, NaiveDateTime, Simulator};

/// Seed of the exports (and of their times of day).
const SEED: u64 = 1111;

#[derive(Debug, Default)]
struct Tally {
    exports: usize,
    rejected: usize,
    fields: usize,
    review: usize,
    /// Per field (`exam_date`, `exam_time`): shown, read right, flagged, flagged although right.
    clock: BTreeMap<&'static str, [usize; 4]>,
    reasons: BTreeMap<String, usize>,
}

/// The moment export `n` of `count` is stamped with: 23:59 and 00:01 first, then times drawn
/// over the whole day; dates alternate between `today` and 2026-12-01.
fn moment(n: usize, today: NaiveDate, rng: &mut impl Rng) -> NaiveDateTime {
    let fixed = NaiveDate::from_ymd_opt(2026, 12, 1).expect("valid date");
    let day = if n.is_multiple_of(2) { today } else { fixed };
    let minute = match n {
        0 => 23 * 60 + 59,
        1 => 1,
        _ => rng.gen_range(0..24 * 60),
    };
    day.and_hms_opt(minute / 60, minute % 60, 0)
        .expect("valid time")
}

#[test]
fn exports_made_today_at_any_hour_are_read_ok() {
    const TEST: &str = "exports_made_today_at_any_hour_are_read_ok";
    let models = common::root().join("models");
    if !models.join("model.json").is_file() {
        sim::samples::skip_or_fail(TEST, &format!("no committed model in {}", models.display()));
        return;
    }
    let count: usize = std::env::var("EXAMLINK_TODAY_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let other = std::env::var_os("EXAMLINK_TODAY_TEMPLATES").map(PathBuf::from);
    let read_with = other
        .clone()
        .unwrap_or_else(|| common::root().join("templates"));
    let recognizer = load(&read_with, &models).expect("recognizer loads");
    let set: TemplateSet = common::templates();
    let today = record::grammar::today_utc();
    let sim = Simulator::new(&set, &FontDirs::new(&[]))
        .expect("simulator")
        .with_today(today);
    let mut tally: BTreeMap<String, Tally> = BTreeMap::new();
    let mut problems = Vec::new();
    for t in set.iter() {
        let tl = tally.entry(t.id.clone()).or_default();
        let mut times = export_rng(SEED ^ 0x7157, &t.id, 0);
        for n in 0..count {
            let at = moment(n, today, &mut times);
            let e = sim
                .render_export_at(&t.id, &mut export_rng(SEED, &t.id, n), at)
                .expect("render");
            let bytes = sim::encode(&e).expect("encode");
            let name = format!("{}_{SEED}_{n}.{}", t.id, e.format);
            tl.exports += 1;
            let r = match recognizer.recognize(&bytes, &name) {
                Ok(r) if r.recognition.template_id == t.id => r,
                other => {
                    // Counted, not asserted: identification is the golden and layout tests'.
                    tl.rejected += 1;
                    println!("  {name}: not read as {}: {:?}", t.id, other.err());
                    continue;
                }
            };
            for f in r.fields() {
                tl.fields += 1;
                tl.review += usize::from(f.status != FieldStatus::Ok);
            }
            for field in ["exam_date", "exam_time"] {
                let Some(truth) = e.label.get(field).flatten() else {
                    continue;
                };
                let f = r.field(field).expect("every canonical field is reported");
                let right = f.value.as_deref() == Some(truth);
                let flagged = f.status != FieldStatus::Ok;
                let c = tl.clock.entry(field).or_default();
                c[0] += 1;
                c[1] += usize::from(right);
                c[2] += usize::from(flagged);
                c[3] += usize::from(flagged && right);
                if flagged {
                    let why = f.reason.as_deref().unwrap_or("-");
                    let kind = if why.contains("outside the range") {
                        "range"
                    } else {
                        "reading"
                    };
                    *tl.reasons
                        .entry(format!("{field} {:?} {kind}", f.status))
                        .or_default() += 1;
                }
                if flagged && right {
                    problems.push(format!(
                        "{name}: {field} {truth} read right but {:?}: {}",
                        f.status,
                        f.reason.as_deref().unwrap_or("-")
                    ));
                }
            }
        }
    }
    println!(
        "templates read with: {} (today {today}, seed {SEED}, {count} exports per layout)",
        read_with.display()
    );
    println!("| layout | exports | rejected | exam_date flagged/shown (right but flagged) | exam_time flagged/shown (right but flagged) | review fields/all |");
    println!("|---|---|---|---|---|---|");
    let mut sum = [0usize; 6];
    for (id, t) in &tally {
        let cell = |f: &str| {
            t.clock
                .get(f)
                .map_or("-".to_owned(), |c| format!("{}/{} ({})", c[2], c[0], c[3]))
        };
        println!(
            "| {id} | {} | {} | {} | {} | {}/{} |",
            t.exports,
            t.rejected,
            cell("exam_date"),
            cell("exam_time"),
            t.review,
            t.fields
        );
        for (k, f) in [(0, "exam_date"), (2, "exam_time")] {
            if let Some(c) = t.clock.get(f) {
                sum[k] += c[2];
                sum[k + 1] += c[0];
            }
        }
        sum[4] += t.review;
        sum[5] += t.fields;
        for (why, n) in &t.reasons {
            println!("|   | | | {why}: {n} | | |");
        }
    }
    println!(
        "total: exam_date flagged {}/{}, exam_time flagged {}/{}, review {}/{} = {:.2} % of fields",
        sum[0],
        sum[1],
        sum[2],
        sum[3],
        sum[4],
        sum[5],
        100.0 * sum[4] as f64 / sum[5].max(1) as f64
    );
    for p in &problems {
        println!("  {p}");
    }
    if other.is_none() {
        assert!(
            problems.is_empty(),
            "{} problems, see above",
            problems.len()
        );
    }
}
