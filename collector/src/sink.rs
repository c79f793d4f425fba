//! Where platform metrics go besides `/metrics`: a Pushgateway, or a remote-write receiver.

pub(crate) mod pushgateway;
pub(crate) mod remote_write;
