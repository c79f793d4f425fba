//! Where events come from.

pub(crate) mod kafka;
