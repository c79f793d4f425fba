//! whisk-collector (being written).
pub mod aggregate;
pub mod event;
