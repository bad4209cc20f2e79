//! The ScaiWave-compatible homeserver: configuration, storage, identity, rooms and the client
//! API. The binary in `main.rs` is a thin command line over this library.
//!
//! Data flows one way: an HTTP request enters [`api`] (extractors parse and authenticate), a
//! domain module ([`identity`], [`rooms`]) decides with pure rules and writes through
//! [`storage`], the only module that speaks SQL. Every room change is appended to the `events`
//! table with a per-server stream position.

pub mod api;
pub mod bundle;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod fed;
pub mod group_commit;
pub mod identity;
pub mod ids;
pub mod listener;
pub mod media;
pub mod messages;
pub mod names;
pub mod ratelimit;
pub mod realtime;
pub mod rooms;
pub mod server;
pub mod signing;
pub mod storage;
#[cfg(test)]
pub(crate) mod test_fixtures;
