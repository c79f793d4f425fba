//! Where platform metrics go besides `/metrics`.

pub(crate) mod pushgateway;
