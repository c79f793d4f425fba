//! Names a pushed family or label may not take, because someone else owns them on the wire.
//!
//! One list for every crate: the SDK refuses these names when an action registers a metric,
//! and the gateway refuses them in a push body. The lists are the union of what the SDK and the
//! gateway refused before they shared this module. The one entry a push through the gateway
//! may still use is the SDK's own: a family in [`SDK_BUILTINS`], under its type, since every
//! SDK push carries them (see [`reserved_in_push`]).

use crate::family::FamilyType;

/// Whole family names owned by others, and why.
pub const RESERVED_NAMES: [(&str, &str); 4] = [
    (
        "push_time_seconds",
        "the Pushgateway adds this metric to every group",
    ),
    (
        "push_failure_time_seconds",
        "the Pushgateway adds this metric to every group",
    ),
    (
        "labels",
        "a family named `labels` overwrites the group's labels in the Pushgateway's \
         /api/v1/metrics (the janitor could no longer see the group)",
    ),
    (
        "last_push_successful",
        "a family named `last_push_successful` overwrites that key of the Pushgateway's \
         /api/v1/metrics",
    ),
];

/// Family-name prefixes owned by others, and who owns them. A family named like one of these
/// would clash with theirs in the shared Pushgateway (a type clash there makes its `/metrics`
/// answer 500 for everyone).
pub const RESERVED_PREFIXES: [(&str, &str); 5] = [
    (
        "whisk_",
        "the `whisk_` prefix belongs to the SDK's built-in metrics",
    ),
    (
        "openwhisk_",
        "the `openwhisk_` prefix belongs to the platform metrics",
    ),
    (
        "pushgateway_",
        "the Pushgateway exposes its own `pushgateway_*` metrics",
    ),
    (
        "go_",
        "the Pushgateway exposes its Go runtime's `go_*` metrics",
    ),
    (
        "process_",
        "the Pushgateway exposes its own `process_*` metrics",
    ),
];

/// Labels of the grouping key: a sample carrying one would be overwritten by the Pushgateway
/// (or, with `honor_labels`, forge another group's identity).
pub const GROUPING_LABELS: [&str; 4] = ["job", "instance", "namespace", "action"];

/// The SDK's built-in families and their types: the only `whisk_` families a push may carry.
pub const SDK_BUILTINS: [(&str, FamilyType); 14] = [
    ("whisk_activations_total", FamilyType::Counter),
    ("whisk_activation_duration_seconds", FamilyType::Histogram),
    ("whisk_cold_start_seconds", FamilyType::Gauge),
    ("whisk_container_start_time_seconds", FamilyType::Gauge),
    ("whisk_last_activation_time_seconds", FamilyType::Gauge),
    ("whisk_push_failures_total", FamilyType::Counter),
    ("whisk_last_push_duration_seconds", FamilyType::Gauge),
    ("whisk_container_info", FamilyType::Gauge),
    ("whisk_activation_cpu_seconds", FamilyType::Histogram),
    ("whisk_activation_memory_peak_bytes", FamilyType::Histogram),
    ("whisk_container_memory_bytes", FamilyType::Gauge),
    ("whisk_container_memory_limit_bytes", FamilyType::Gauge),
    ("whisk_container_cpu_seconds_total", FamilyType::Counter),
    (
        "whisk_container_cpu_throttled_seconds_total",
        FamilyType::Counter,
    ),
];

/// Why `name` is reserved (who owns it), or `None` if an action may register it.
///
/// ```
/// use whisk_grouping::reserved;
///
/// assert!(reserved("go_goroutines").is_some());
/// assert!(reserved("labels").is_some());
/// assert_eq!(reserved("gopher_count"), None);
/// ```
pub fn reserved(name: &str) -> Option<&'static str> {
    RESERVED_PREFIXES
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .or_else(|| RESERVED_NAMES.iter().find(|(n, _)| *n == name))
        .map(|(_, why)| *why)
}

/// Why a pushed family `name` of type `kind` is reserved, or `None` if a push may carry it:
/// [`reserved`], except the SDK's built-in families under their own type.
///
/// ```
/// use whisk_grouping::{FamilyType, reserved_in_push};
///
/// assert_eq!(reserved_in_push("whisk_activations_total", FamilyType::Counter), None);
/// assert!(reserved_in_push("whisk_activations_total", FamilyType::Gauge).is_some());
/// assert!(reserved_in_push("whisk_mine", FamilyType::Gauge).is_some());
/// ```
pub fn reserved_in_push(name: &str, kind: FamilyType) -> Option<&'static str> {
    if SDK_BUILTINS.contains(&(name, kind)) {
        return None;
    }
    reserved(name)
}

/// Whether `label` belongs to the grouping key.
pub fn is_grouping_label(label: &str) -> bool {
    GROUPING_LABELS.contains(&label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_and_prefixes_are_the_union_of_both_old_lists() {
        for name in [
            "whisk_mine",
            "openwhisk_action_x",
            "push_time_seconds",
            "push_failure_time_seconds",
            "pushgateway_build_info",
            "go_goroutines",
            "process_resident_memory_bytes",
            "labels",
            "last_push_successful",
        ] {
            assert!(reserved(name).is_some(), "{name}");
            assert!(
                reserved_in_push(name, FamilyType::Gauge).is_some(),
                "{name}"
            );
        }
        for name in ["whiskey_bottles", "labels_total", "gopher_count", "labelsx"] {
            assert_eq!(reserved(name), None, "{name}");
        }
    }

    #[test]
    fn a_push_may_carry_the_sdk_builtins_only_under_their_type() {
        for (name, kind) in SDK_BUILTINS {
            assert!(reserved(name).is_some(), "{name}");
            assert_eq!(reserved_in_push(name, kind), None, "{name}");
            let other = if kind == FamilyType::Untyped {
                FamilyType::Gauge
            } else {
                FamilyType::Untyped
            };
            assert!(reserved_in_push(name, other).is_some(), "{name}");
        }
    }

    #[test]
    fn grouping_labels_are_the_four_key_labels() {
        for l in ["job", "instance", "namespace", "action"] {
            assert!(is_grouping_label(l));
        }
        assert!(!is_grouping_label("region"));
    }
}
