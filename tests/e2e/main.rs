//! End-to-end tests: each starts a real `homeserver` process and talks HTTP to it.

mod harness;

mod auth;
mod bundle;
mod connections;
mod fed_join;
mod login;
mod malformed;
mod media;
mod messages;
mod names;
mod permissions;
mod realtime;
mod rooms;
mod rules_replay;
mod signing;
mod tenants;
