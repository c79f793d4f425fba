//! The validation cache never gives a verdict the parser would not: every body of the shared
//! corpus (`tests/corpus`) and below, the value-only variants that hit the cache, thousands of hostile edits of them and thousands of
//! bodies generated from the text format's pieces, is judged by `Verdicts::validate` and by
//! `validate` alone, and the two must agree.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/corpus/mod.rs"]
mod corpus;

use super::{ENTRY_OVERHEAD, Verdicts, is_plain_float, shape_of};
use crate::telemetry::Telemetry;
use crate::validate::validate;
use corpus::{BODIES, Rng, generated, mutated};

const MAX_SERIES: usize = 50;

/// A body whose label values run over raw newlines (the parser allows it; `validate` and the
/// Pushgateway refuse it), one line ending in what looks like a value: the two series differ
/// only in that token. Not cacheable; its value-only variants would make them duplicates.
const SPANNING: &str = "# TYPE notes gauge\n\
     notes{text=\"line 1\nline\"} 1\n\
     notes{text=\"line 2\nline\"} 1\n";

/// `body` with every sample line's value (a plain float after the last whitespace) replaced by
/// another plain float.
fn with_new_values(body: &str, rng: &mut Rng) -> String {
    let values = [
        "0",
        "42",
        "-7",
        "3.5",
        "1e-9",
        "2.5E+12",
        "NaN",
        "+Inf",
        "-Inf",
        "123456789",
    ];
    body.split('\n')
        .map(|line| {
            if line.is_empty() || line.starts_with('#') {
                return line.to_string();
            }
            match line.rfind([' ', '\t']) {
                Some(cut) if is_plain_float(&line.as_bytes()[cut + 1..]) => {
                    format!("{}{}", &line[..=cut], values[rng.below(values.len())])
                }
                _ => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn check_agrees(verdicts: &Verdicts, body: &str) -> bool {
    let cached = verdicts.validate(body.as_bytes());
    let parsed = validate(body.as_bytes(), MAX_SERIES);
    match (&cached, &parsed) {
        (Ok(c), Ok(p)) => assert_eq!(**c, *p, "different verdicts for {body:?}"),
        (Err(c), Err(p)) => assert_eq!(c, p, "different refusals for {body:?}"),
        _ => panic!("cache says {cached:?}, parser says {parsed:?} for {body:?}"),
    }
    cached.is_ok()
}

#[test]
fn value_only_variants_of_accepted_bodies_are_judged_without_a_parse() {
    let telemetry = Telemetry::new();
    let verdicts = Verdicts::new(MAX_SERIES, 1 << 20, telemetry.clone());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for body in BODIES {
        assert!(check_agrees(&verdicts, body), "{body:?} is accepted");
    }
    assert_eq!(verdicts.len(), BODIES.len());
    let misses = telemetry.validation_cache_misses.get();
    for _ in 0..200 {
        let body = BODIES[rng.below(BODIES.len())];
        assert!(check_agrees(&verdicts, &with_new_values(body, &mut rng)));
    }
    assert_eq!(telemetry.validation_cache_hits.get(), 200);
    assert_eq!(telemetry.validation_cache_misses.get(), misses);
}

#[test]
fn hostile_edits_get_the_parsers_verdict_from_the_cache_too() {
    let telemetry = Telemetry::new();
    let verdicts = Verdicts::new(MAX_SERIES, 1 << 20, telemetry.clone());
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (mut accepted, mut refused) = (0, 0);
    let bases: Vec<&str> = BODIES.into_iter().chain([SPANNING]).collect();
    for round in 0..6000 {
        let base = bases[round % bases.len()];
        // Every other case edits a value-only variant, so edits meet shapes the cache holds
        // (the accepted edits are remembered too and met again by later edits).
        let base = if round % 2 == 0 {
            base.to_string()
        } else {
            with_new_values(base, &mut rng)
        };
        let body = mutated(&base, &mut rng);
        if check_agrees(&verdicts, &body) {
            accepted += 1;
            // Its value-only variant must hit and agree as well.
            check_agrees(&verdicts, &with_new_values(&body, &mut rng));
        } else {
            refused += 1;
        }
        check_agrees(&verdicts, &base);
    }
    // The cases exercised both verdicts and the cache's fast path.
    assert!(
        accepted > 500 && refused > 500,
        "{accepted} accepted, {refused} refused"
    );
    assert!(
        telemetry.validation_cache_hits.get() > 3000,
        "{} hits",
        telemetry.validation_cache_hits.get()
    );
}

#[test]
fn a_timestamp_or_a_new_label_after_an_accepted_body_is_parsed_and_refused() {
    let verdicts = Verdicts::new(MAX_SERIES, 1 << 20, Telemetry::new());
    assert!(verdicts.validate(b"jobs_total{k=\"a\"} 1\n").is_ok());
    for refused in [
        &b"jobs_total{k=\"a\"} 1 1700000000\n"[..],
        b"jobs_total{k=\"a\"} 1\njobs_total{k=\"a\"} 2\n",
        b"jobs_total{k=\"a\",job=\"x\"} 1\n",
        b"jobs_total{k=\"a\"} 1\nlabels 2\n",
    ] {
        let err = verdicts.validate(refused).unwrap_err();
        assert_eq!(Err(err), validate(refused, MAX_SERIES));
    }
}

#[test]
fn the_cache_holds_at_most_its_bytes_of_shapes() {
    let telemetry = Telemetry::new();
    // Each entry holds a 40-byte shape and one family name of 16 bytes (plus its `Family`).
    let cost = ENTRY_OVERHEAD + 40 + 16 + std::mem::size_of::<crate::validate::Family>();
    let verdicts = Verdicts::new(MAX_SERIES, 5 * cost, telemetry.clone());
    for i in 0..100 {
        let body = format!("family_{i:03}_total{{k=\"some label value\"}} 1\n");
        assert!(verdicts.validate(body.as_bytes()).is_ok());
    }
    assert_eq!("family_000_total{k=\"some label value\"} \n".len(), 40);
    assert!(
        verdicts.len() <= 5 && !verdicts.is_empty(),
        "{}",
        verdicts.len()
    );
    assert_eq!(
        telemetry.validation_cache_entries.get(),
        verdicts.len() as i64
    );
    // Off: every body is parsed, and counted as a miss.
    let telemetry = Telemetry::new();
    let off = Verdicts::new(MAX_SERIES, 0, telemetry.clone());
    assert!(off.validate(b"a 1\n").is_ok());
    assert!(off.validate(b"a 2\n").is_ok());
    assert!(off.is_empty());
    assert_eq!(telemetry.validation_cache_misses.get(), 2);
    assert_eq!(telemetry.validation_cache_hits.get(), 0);
}

#[test]
fn a_label_value_spanning_lines_is_refused_and_never_cut_into() {
    // The parser lets a label value run over a raw newline, so a line may end inside a label
    // value with what looks like a value token. Cutting it would make the label values of the
    // two series below part of the "values": an edit making them equal (a duplicate series)
    // would take an accepted verdict. `validate` refuses such bodies (as the Pushgateway does),
    // and the cache never cuts into them either.
    let verdicts = Verdicts::new(MAX_SERIES, 1 << 20, Telemetry::new());
    let distinct = "a{k=\"x 1\nb\"} 3\na{k=\"x 2\nb\"} 3\n";
    let duplicate = "a{k=\"x 1\nb\"} 3\na{k=\"x 1\nb\"} 3\n";
    for body in [distinct, duplicate] {
        assert!(!check_agrees(&verdicts, body), "{body:?}");
        assert!(!shape_of(body.as_bytes(), &mut Vec::new()), "{body:?}");
    }
    assert!(verdicts.is_empty());
}

#[test]
fn trailing_whitespace_is_refused_as_the_pushgateway_refuses_it_and_never_cached() {
    // The parser allows spaces and tabs after the value, the Pushgateway does not (it reads a
    // timestamp there); such a line's last token is empty, so the cache never cuts it.
    let verdicts = Verdicts::new(MAX_SERIES, 1 << 20, Telemetry::new());
    for body in ["a 1 \n", "a 1\t\n", "a{k=\"v\"} 2 \t\n"] {
        assert!(validate(body.as_bytes(), MAX_SERIES).is_err(), "{body:?}");
        assert!(!check_agrees(&verdicts, body));
        assert!(!shape_of(body.as_bytes(), &mut Vec::new()), "{body:?}");
    }
    assert!(verdicts.is_empty());
}

#[test]
fn generated_bodies_and_their_value_only_variants_get_the_parsers_verdict() {
    let telemetry = Telemetry::new();
    let verdicts = Verdicts::new(MAX_SERIES, 1 << 22, telemetry.clone());
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut accepted = 0;
    for _ in 0..20_000 {
        let body = generated(&mut rng);
        if check_agrees(&verdicts, &body) {
            accepted += 1;
            for _ in 0..3 {
                check_agrees(&verdicts, &with_new_values(&body, &mut rng));
            }
        }
    }
    assert!(accepted > 2500, "{accepted} accepted");
    assert!(
        telemetry.validation_cache_hits.get() > 4000,
        "{} hits",
        telemetry.validation_cache_hits.get()
    );
}
