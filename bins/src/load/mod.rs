//! The event-driven load generator behind `switchboard-load`.
