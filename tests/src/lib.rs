//! whisk-emulator (being written).
pub mod dashboards;
