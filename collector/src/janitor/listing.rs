//! The Pushgateway's `/api/v1/metrics`, read as a stream one group at a time by the shared
//! reader ([`whisk_grouping::listing`]): only each group's grouping labels and
//! `push_time_seconds` (and, for the guard, each family's type) are kept, so memory stays flat
//! in the number of series stored; the read has a size cap and a deadline that grows with the
//! bytes received.
//!
//! The round that reads a listing and acts on its groups is [`super::listing_round`].

use std::time::Duration;

pub(crate) use whisk_grouping::listing::read_listing;
pub(crate) use whisk_grouping::listing::{ListedGroup, ListingError, ListingLimits};

/// Upper bound of one listing request; [`ListingLimits`] usually ends a stalled one sooner.
pub(super) const LISTING_CAP: Duration = Duration::from_secs(600);
