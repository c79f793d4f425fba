//! Who is pushing: a random per-process instance id and the action's namespace and name.

use std::sync::OnceLock;

use whisk_grouping::ActionName;

/// The container's instance id: 32 lowercase hex characters from 128 random bits of the OS
/// random number generator, made once per process.
///
/// OpenWhisk gives the action no stable container name (`HOSTNAME` is not passed to the action
/// process), so the SDK makes its own. If the OS generator fails (it practically never does), the
/// id is derived from the pid and the start time, which is still unique per container.
pub(crate) fn instance_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let mixed = nanos ^ (u128::from(std::process::id()) << 96);
            bytes = mixed.to_le_bytes();
        }
        hex(&bytes)
    })
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// An action's namespace and name, split from its fully qualified name by the one rule all
/// crates share ([`whisk_grouping::ActionName::parse`]: `/ns/pkg/a` → namespace `ns`, action
/// `pkg/a`). A name that does not parse as qualified (`a`, `/a`, `ns/`, empty) is labelled with
/// an empty namespace and the whole name, without its leading `/`, as the action: the push still
/// happens and the group is still the container's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ActionIdentity {
    /// First path segment.
    pub(crate) namespace: String,
    /// The rest (may contain `/` for actions in packages).
    pub(crate) action: String,
}

impl ActionIdentity {
    /// Splits `__OW_ACTION_NAME`.
    pub(crate) fn from_action_name(name: &str) -> Self {
        match ActionName::parse(name) {
            Some(n) => Self {
                namespace: n.namespace().to_string(),
                action: n.action().to_string(),
            },
            None => Self {
                namespace: String::new(),
                action: name.strip_prefix('/').unwrap_or(name).to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_id_is_32_lowercase_hex_chars_and_stable_within_the_process() {
        let id = instance_id();
        assert_eq!(id.len(), 32);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
            "{id}"
        );
        assert_eq!(id, instance_id());
        assert_ne!(id, "0".repeat(32));
    }

    #[test]
    fn splits_namespace_from_packaged_action_name() {
        let id = ActionIdentity::from_action_name("/ns/pkg/a");
        assert_eq!(
            id,
            ActionIdentity {
                namespace: "ns".into(),
                action: "pkg/a".into()
            }
        );
    }

    #[test]
    fn splits_names_without_leading_slash_and_without_namespace() {
        assert_eq!(
            ActionIdentity::from_action_name("guest/hello").action,
            "hello"
        );
        assert_eq!(
            ActionIdentity::from_action_name("guest/hello").namespace,
            "guest"
        );
        let bare = ActionIdentity::from_action_name("hello");
        assert_eq!(
            (bare.namespace.as_str(), bare.action.as_str()),
            ("", "hello")
        );
        assert_eq!(
            ActionIdentity::from_action_name(""),
            ActionIdentity::default()
        );
        // not qualified: empty namespace, the name without its leading slash as the action
        let odd = ActionIdentity::from_action_name("/ns/");
        assert_eq!((odd.namespace.as_str(), odd.action.as_str()), ("", "ns/"));
        let lone = ActionIdentity::from_action_name("/a");
        assert_eq!((lone.namespace.as_str(), lone.action.as_str()), ("", "a"));
    }
}
