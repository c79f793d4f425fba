//! OpenWhisk's fully qualified action name, split into namespace and action.

/// A fully qualified OpenWhisk action name split the way the platform metrics label it.
///
/// The rule (the same in the SDK, the collector and the emulator): one leading `/` is dropped;
/// the namespace is everything before the next `/`, the action everything after it (so an action
/// in a package keeps its package: `/ns/pkg/a` → namespace `ns`, action `pkg/a`). Both parts must
/// be non-empty; anything else is not a qualified name and [`ActionName::parse`] gives `None`.
/// What a caller does with such a name is its own policy (the collector rejects the event, the
/// emulator rejects the action spec, the SDK labels it with an empty namespace).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActionName<'a> {
    namespace: &'a str,
    action: &'a str,
}

impl<'a> ActionName<'a> {
    /// Splits `name` (`/ns/a`, `/ns/pkg/a`, `ns/a`); `None` when it has no non-empty namespace
    /// followed by a non-empty action (`a`, `/a`, `ns/`, `/`, the empty string).
    pub fn parse(name: &'a str) -> Option<Self> {
        let trimmed = name.strip_prefix('/').unwrap_or(name);
        // A byte scan: namespaces are short, and `split_once`'s searcher costs more than the
        // scan itself (the collector splits every event's name).
        let slash = trimmed.bytes().position(|b| b == b'/')?;
        let (namespace, action) = (&trimmed[..slash], &trimmed[slash + 1..]);
        (!namespace.is_empty() && !action.is_empty()).then_some(Self { namespace, action })
    }

    /// The first path segment.
    pub fn namespace(&self) -> &'a str {
        self.namespace
    }

    /// The rest: the action's name, with its package when it has one (`pkg/a`).
    pub fn action(&self) -> &'a str {
        self.action
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(name: &str) -> Option<(&str, &str)> {
        ActionName::parse(name).map(|n| (n.namespace(), n.action()))
    }

    #[test]
    fn fully_qualified_names_split_at_the_first_segment() {
        assert_eq!(split("/ns/a"), Some(("ns", "a")));
        assert_eq!(split("/ns/pkg/a"), Some(("ns", "pkg/a")));
        assert_eq!(split("ns/a"), Some(("ns", "a")));
        assert_eq!(split("ns/pkg/a"), Some(("ns", "pkg/a")));
    }

    #[test]
    fn names_without_namespace_and_action_are_not_qualified() {
        for name in ["a", "/a", "", "/", "//a", "ns/", "/ns/"] {
            assert_eq!(split(name), None, "{name:?}");
        }
    }
}
