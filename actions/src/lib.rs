//! Example OpenWhisk actions built on [`whisk_metrics`]: `hello`, `orders` and `flaky`.
//!
//! Each binary in `src/bin/` is a complete action: it registers its custom metrics once, then
//! hands its handler to the SDK's action loop (`whisk_metrics::run` / `run_with_context`), which
//! reads one activation per stdin line, writes one result line to fd 3 and pushes the container's
//! metrics to the Pushgateway named by the init parameter `WHISK_METRICS_PUSHGATEWAY_URL`.
//!
//! The handlers live here, as plain functions over their metrics, so they can be tested without
//! the action loop. Parameters and metrics follow `docs/design.md` ("Example actions' custom
//! metrics"):
//!
//! | action | params | result | metrics |
//! |---|---|---|---|
//! | hello | `name` | `{"greeting": "Hello, <name>!"}` | `hello_greetings_total` |
//! | orders | `items`, `value`, `region`, `work` (`{"mib", "cpu_ms"}`, optional) | `{"order_id", "items"}` | `orders_placed_total`, `orders_items_total`, `orders_value` (by `region`) |
//! | flaky | `mode` ∈ ok, error, panic, sleep; `sleep_ms` | ok: `{"ok": true}` | `flaky_calls_total` (by `mode`) |
//!
//! Build them as static executables and package them as OpenWhisk zips with
//! `cargo xtask package` (see the emulator's documentation).
// Product code: no function over 100 lines (clippy.toml); tests and benches are exempt.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

mod flaky;
mod hello;
mod orders;
mod params;
mod work;

pub use flaky::{Flaky, FlakyMode, MAX_SLEEP_MS};
pub use hello::Hello;
pub use orders::{Orders, VALUE_BUCKETS};
pub use params::ParamError;
pub use work::{MAX_WORK_CPU_MS, MAX_WORK_MIB, Work};
