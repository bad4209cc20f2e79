//! End-to-end tests: each starts a real `homeserver` process and talks HTTP to it.

mod harness;

mod auth;
mod rooms;
