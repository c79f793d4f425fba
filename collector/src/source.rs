//! Where events come from.

pub(crate) mod broker_health;
pub(crate) mod kafka;
