//! Bodies for holding the gateway's verdicts against another judge: accepted bodies of several
//! shapes, hostile edits of them and bodies generated from the text format's pieces. Shared by
//! the validation cache's unit tests (`src/verdicts/agreement.rs`) and `remote_write.rs`.

#![allow(dead_code)]

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

/// A deterministic xorshift generator (no dependency, same cases every run).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(crate) fn pick<'a>(&mut self, choices: &[&'a str]) -> &'a str {
        choices[self.below(choices.len())]
    }
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
