//! The validation cache never gives a verdict the parser would not: every body below, the
//! value-only variants that hit the cache, thousands of hostile edits of them and thousands of
//! bodies generated from the text format's pieces, is judged by `Verdicts::validate` and by
//! `validate` alone, and the two must agree.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use whisk_gateway::telemetry::Telemetry;
use whisk_gateway::validate::validate;
use whisk_gateway::verdicts::{ENTRY_OVERHEAD, Verdicts, is_plain_float, shape_of};

const MAX_SERIES: usize = 50;

/// Accepted bodies of several shapes: SDK-like, label values holding spaces, quotes, braces,
/// commas and `#`, tabs as separators, untyped and summary families.
pub(crate) const BODIES: [&str; 4] = [
    "# HELP whisk_activations_total Activations\n\
     # TYPE whisk_activations_total counter\n\
     whisk_activations_total{status=\"success\"} 3\n\
     whisk_activations_total{status=\"application_error\"} 0\n\
     # HELP whisk_activation_duration_seconds Duration of pushes\n\
     # TYPE whisk_activation_duration_seconds histogram\n\
     whisk_activation_duration_seconds_bucket{le=\"0.001\"} 1\n\
     whisk_activation_duration_seconds_bucket{le=\"+Inf\"} 2\n\
     whisk_activation_duration_seconds_sum 0.003\n\
     whisk_activation_duration_seconds_count 2\n",
    "# TYPE orders_placed_total counter\n\
     orders_placed_total{region=\"eu \\\"west\\\" 1\",shop=\"a} 2\"} 7\n\
     orders_placed_total{region=\"#us, 3\",shop=\"b=c\"} 1.5e3\n\
     \n\
     # a comment 12\n\
     free_form\t-2.25\n\
     other:ratio NaN\n",
    "# TYPE rpc_seconds summary\n\
     rpc_seconds{quantile=\"0.5\"} 0.25\n\
     rpc_seconds{quantile=\"0.99\"} +Inf\n\
     rpc_seconds_sum 12.5\n\
     rpc_seconds_count 40\n\
     # TYPE temperature gauge\n\
     temperature{room=\"k\"} -Inf\n",
    "up_total 1\n",
];

/// A body whose label values run over raw newlines (the parser allows it; `validate` and the
/// Pushgateway refuse it), one line ending in what looks like a value: the two series differ
/// only in that token. Not cacheable; its value-only variants would make them duplicates.
const SPANNING: &str = "# TYPE notes gauge\n\
     notes{text=\"line 1\nline\"} 1\n\
     notes{text=\"line 2\nline\"} 1\n";

/// A deterministic xorshift generator (no dependency, same cases every run).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, choices: &[&'a str]) -> &'a str {
        choices[self.below(choices.len())]
    }
}

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

/// `body` with one to three edits (insert, delete or replace one character), from characters
/// that matter to the text format's grammar.
pub(crate) fn mutated(body: &str, rng: &mut Rng) -> String {
    const ALPHABET: &[u8] = b" \t\n\r#{}=,\"\\.+-eE019xaIn_:TYPEHLNf";
    let mut bytes = body.as_bytes().to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(bytes.len() + 1);
        let c = ALPHABET[rng.below(ALPHABET.len())];
        match rng.below(3) {
            0 => bytes.insert(at, c),
            1 if at < bytes.len() => {
                bytes.remove(at);
            }
            _ if at < bytes.len() => bytes[at] = c,
            _ => bytes.push(c),
        }
    }
    String::from_utf8(bytes).expect("ASCII edits of ASCII text")
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
    let cost = ENTRY_OVERHEAD + 40 + 16 + std::mem::size_of::<whisk_gateway::validate::Family>();
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

/// A body of one to five lines built from the text format's pieces rather than edited from a
/// fixed body: TYPE and comment lines, samples of histogram/summary-like names with or without
/// labels, separators of spaces, tabs or none, label values holding spaces, escapes, `#` and raw
/// newlines, now and then a timestamp, a trailing space or a CR, and once in a while no final
/// newline.
pub(crate) fn generated(rng: &mut Rng) -> String {
    let names = [
        "a", "a", "a", "a_bucket", "h", "h_bucket", "h_sum", "h_count", "s_sum", "s",
    ];
    let label_values = [
        "x", "x 1", "x 1\nb", "x 2\nb", "x 2\n# c", "x 1\n# c", "\n", "1\nb 2", "\\\" 1", "\\\\",
        "", " 2", "+Inf",
    ];
    let values = ["0", "1", "-1", "1e5", "NaN", "+Inf", "-Inf", "Inf", "1.5"];
    // Half the bodies keep one name and one label name, so that their series differ only in
    // label values (or are duplicates).
    let same = rng.below(2) == 0;
    let (name, key) = (rng.pick(&names), rng.pick(&["k", "le", "quantile"]));
    let mut out = String::new();
    for _ in 0..1 + rng.below(5) {
        match rng.below(10) {
            0 => {
                let name = rng.pick(&["a", "h", "s", "b"]);
                let kind = rng.pick(&["counter", "gauge", "histogram", "summary", "untyped"]);
                out.push_str(&format!("# TYPE {name} {kind}"));
            }
            1 => out.push_str(rng.pick(&["# c 1", "# HELP a x 1", "", "# HELP h 2"])),
            _ => {
                out.push_str(if same { name } else { rng.pick(&names) });
                out.push_str(rng.pick(&[" ", "\t", " \t", ""]));
                if rng.below(3) > 0 {
                    out.push('{');
                    for i in 0..1 + rng.below(2) {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(if same && i == 0 {
                            key
                        } else {
                            rng.pick(&["k", "le", "quantile"])
                        });
                        out.push_str("=\"");
                        out.push_str(rng.pick(&label_values));
                        out.push('"');
                    }
                    out.push('}');
                    out.push_str(rng.pick(&[" ", "\t", ""]));
                } else if rng.below(2) == 0 {
                    out.push(' ');
                }
                out.push_str(rng.pick(&values));
                if rng.below(20) == 0 {
                    out.push_str(rng.pick(&[" 5", " ", "\r"]));
                }
            }
        }
        out.push('\n');
    }
    if rng.below(10) == 0 {
        out.pop();
    }
    out
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
