//! The names that every whisk-metrics crate must agree on, defined once:
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

mod action_name;
mod conventions;
mod grouping_key;

pub use action_name::ActionName;
pub use conventions::{TIME_BUCKETS, parse_duration, parse_duration_nonzero};
pub use grouping_key::{GroupingKey, PathError, encode_segment};
