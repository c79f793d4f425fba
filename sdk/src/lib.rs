//! whisk-metrics (being written).
