//! whisk-collector (being written).
