//! The wire rules every whisk-metrics crate must agree on, defined once. The SDK, the collector
//! and the gateway call this crate; none keeps a copy of a rule below. It owns the text-format
//! wire rules (one module each):
//!
//! - names ([`check_metric_name`], [`check_label_name`]): what Prometheus' text format accepts;
//! - reserved names ([`reserved`], [`reserved_in_push`], [`GROUPING_LABELS`]): family names,
//!   prefixes and labels that belong to the Pushgateway, the platform, the SDK's built-ins or
//!   the grouping key: the SDK refuses them at registration, the gateway in a push;
//! - family types ([`FamilyType`]) with the series suffixes of histograms and summaries, and
//!   the clash rule ([`find_clash`], [`clashes`]): which two families make a Pushgateway's
//!   `/metrics` fail, as its own collision check reads them; the SDK's registry, the gateway's
//!   family table and the collector's guard all ask it;
//! - escaping ([`escape_label_value`], [`escape_help`]) of the exposition the SDK pushes and the
//!   collector serves;
//! - the streamed reader of a Pushgateway's `/api/v1/metrics` (`listing`, with the `listing`
//!   feature): one group at a time, memory flat in the number of series stored;
//!
//! and the names on the wire besides the text format:
//!
//! - [`ActionName`]: how OpenWhisk's fully qualified action name (`/ns/pkg/a`) splits into the
//!   `namespace` and `action` labels — the SDK's grouping key, the collector's platform labels and
//!   the emulator's action specs all use this one rule.
//! - [`GroupingKey`]: a Pushgateway group (`job` plus ordered labels) and its URL path, always
//!   written with `@base64` segments, and read back from either form (the gateway parses what the
//!   SDK writes).
//! - [`parse_duration`] and [`TIME_BUCKETS`]: the duration syntax of every flag and environment
//!   variable (`250ms`, `15s`, `15m`, `1h`, `30`) and the buckets of every time histogram.
//!
//! ```
//! use whisk_grouping::{ActionName, GroupingKey};
//!
//! let name = ActionName::parse("/guest/pkg/hello").unwrap();
//! assert_eq!((name.namespace(), name.action()), ("guest", "pkg/hello"));
//!
//! let key = GroupingKey::new("openwhisk_actions")
//!     .with("instance", "0123")
//!     .with("namespace", name.namespace())
//!     .with("action", name.action());
//! assert_eq!(
//!     key.path(),
//!     "/metrics/job@base64/b3BlbndoaXNrX2FjdGlvbnM/instance@base64/MDEyMw\
//!      /namespace@base64/Z3Vlc3Q/action@base64/cGtnL2hlbGxv"
//! );
//! assert_eq!(GroupingKey::from_path(&key.path()).unwrap(), key);
//! ```
// Product code: no function over 100 lines (clippy.toml); tests and benches are exempt.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

mod action_name;
mod clash;
mod conventions;
mod escape;
mod family;
mod grouping_key;
#[cfg(feature = "listing")]
pub mod listing;
mod names;
mod reserved;

pub use action_name::ActionName;
pub use clash::{Clash, clashes, find_clash};
pub use conventions::{TIME_BUCKETS, parse_duration, parse_duration_nonzero};
pub use escape::{escape_help, escape_label_value};
pub use family::{FamilyType, SERIES_SUFFIXES};
pub use grouping_key::{GroupingKey, PathError, encode_segment};
pub use names::{
    NameError, check_label_name, check_metric_name, is_label_name, is_metric_name_char,
    is_metric_name_start,
};
pub use reserved::{
    GROUPING_LABELS, RESERVED_NAMES, RESERVED_PREFIXES, SDK_BUILTINS, is_grouping_label, reserved,
    reserved_in_push,
};
