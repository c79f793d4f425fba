//! The probe action's `ok` path without the SDK: the minimal actionloop (stdin line → fd 3
//! line), the baseline the benchmark compares the SDK's response path with.

use std::fs::File;
use std::io::{BufRead, Write};
use std::os::fd::FromRawFd;

use serde_json::{Value, json};

#[allow(unsafe_code)]
fn main() {
    // SAFETY: the actionloop proxy (or the benchmark) passes the result pipe as fd 3.
    let mut fd3 = unsafe { File::from_raw_fd(3) };
    let mut count = 0u64;
    let mut out = Vec::with_capacity(256);
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let result = match serde_json::from_str::<Value>(&line) {
            Ok(mut input) => {
                count += 1;
                let id = input["activation_id"].take();
                json!({ "ok": true, "activation_id": id, "count": count })
            }
            Err(e) => json!({ "error": e.to_string() }),
        };
        // one write per result, like the SDK (`writeln!` on a File is a write per fragment)
        out.clear();
        if serde_json::to_writer(&mut out, &result).is_err() {
            break;
        }
        out.push(b'\n');
        if fd3.write_all(&out).and_then(|()| fd3.flush()).is_err() {
            break;
        }
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
    }
}
