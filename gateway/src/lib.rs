//! # whisk-gateway
//!
//! The front door for whisk-metrics SDK pushes. Action containers push here instead of to the
//! Pushgateway; only the gateway, the collector and Prometheus reach the Pushgateways.
//!
//! A push passes, in this order (the first failing step answers, nothing is stored):
//!
//! 1. **Path** (`http`): `PUT` or `DELETE` on
//!    `/metrics/job@base64/<job>/instance@base64/<id>/namespace@base64/<ns>/action@base64/<action>`
//!    (plain segments too), read with [`whisk_grouping::GroupingKey::from_path`]; exactly the
//!    labels `instance`, `namespace`, `action` (else 404), `PUT`/`DELETE` only (else 405), and
//!    only the SDK's job `--job` (else 403: `openwhisk_platform` belongs to the collector).
//! 2. **Authentication** (`auth`): HTTP basic auth with the activation's `__OW_API_KEY`; the
//!    controller's `GET /api/v1/namespaces` says which namespaces the key may act in (cached by
//!    SHA-256 of the header). No/invalid credentials 401, other namespace 403, controller
//!    unreachable 503.
//! 3. **Validation** (`validate`, [`validate()`]): size, the text format (parsed with
//!    `prom_text_format_parser`), the series budget, reserved names, grouping-key labels → 400.
//!    A body that differs from an accepted one only in its sample values takes that one's
//!    verdict without a parse (`verdicts`): a container's pushes keep their shape.
//! 4. **Types** (`families`, [`FamilyTable`]): a family whose type differs from what any
//!    stored group has under that name, or that clashes with a histogram's or summary's series
//!    names → 409
//!    (`family `jobs` is a gauge in another group; this push has it as a counter`). A name new
//!    to this replica first makes it read the target shard's listing (`first_sight`), so a
//!    family another replica accepted since the last resync is known.
//! 5. **Forwarding** (`forward`, `shard` with [`Shards`], `upstream`): to one of the
//!    `--pushgateway-url`s, chosen by rendezvous hashing of the instance id; the Pushgateway's
//!    status and body are passed back. Only a push that passed steps 1–4 reaches a shard.
//!
//! Each step is one function of `http`. The listener ([`whisk_serve`]) bounds every
//! connection first: head, idle and body timeouts, connections per peer address and in all.
//!
//! With `--remote-write-url` instead of `--pushgateway-url`, step 4 is skipped (a database
//! keeps every series apart) and step 5 writes the push as remote-write samples into a
//! Prometheus remote-write receiver (`remote_write`), answering only once it acknowledged.
//!
//! Its own metrics (`whisk_gateway_*`, `telemetry`) are on `/metrics`; `/healthz` answers
//! while the process runs, `/readyz` once the family table is seeded from every Pushgateway.
//! Names, flags and environment variables are the contracts of docs/design.md.
//!
//! ```
//! use whisk_gateway::{FamilyType, validate};
//!
//! let body = b"# TYPE jobs_total counter\njobs_total{kind=\"a\"} 3\n";
//! let push = validate(body, 500).unwrap();
//! assert_eq!(push.families[0].kind, FamilyType::Counter);
//! assert!(validate(b"labels 1\n", 500).is_err());
//! ```
//!
//! The modules named above are private; the crate exports what the binary and the tests need:
//! [`Config`], [`run`], [`Error`] and the wire checks of steps 3–5.
//!
//! The binary is `config → run(config, shutdown)`; embedders call [`run`] the same way.
// Product code: no function over 100 lines (clippy.toml); tests and benches are exempt.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

mod auth;
mod config;
mod error;
mod families;
mod first_sight;
mod forward;
mod http;
mod remote_write;
mod service;
mod shard;
mod telemetry;
mod upstream;
mod validate;
mod verdicts;

pub use config::{AuthMode, Config};
pub use error::{Error, Result};
pub use service::{run, shutdown_signal};

// The wire checks of steps 3–5, for the tests that hold them against a real Pushgateway.
pub use families::{Conflict, FamilyTable};
pub use shard::Shards;
pub use validate::{Family, Invalid, Validated, validate};
pub use whisk_grouping::FamilyType;
