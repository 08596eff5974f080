//! The black-box test suite: every test starts the real server on `127.0.0.1:0` with a fresh
//! database (SQLite, or PostgreSQL when `ROSTER_TEST_DATABASE_URL` is set) and talks to it only
//! through its gRPC interface with generated clients.
//!
//! Run one backend: `cargo test --test api`; the other:
//! `ROSTER_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:55432/postgres cargo test --test api`
//! (`bash tests/run.sh` starts a throwaway PostgreSQL and runs both). Set `ROSTER_TEST_LOG=debug`
//! to see the server's logs.

// Requests are built with `..Default::default()` so that a field added to a proto message does
// not break tests that do not care about it; where every field is set today, that is "needless".
#![allow(clippy::needless_update)]

// A test target's root resolves `mod x;` next to itself, so the modules name their folder.
#[path = "api/harness.rs"]
mod harness;

#[path = "api/auth.rs"]
mod auth;
#[path = "api/references.rs"]
mod references;
#[path = "api/roles.rs"]
mod roles;
#[path = "api/security.rs"]
mod security;
#[path = "api/service.rs"]
mod service;
#[path = "api/teams.rs"]
mod teams;
#[path = "api/trust.rs"]
mod trust;
#[path = "api/users.rs"]
mod users;
#[path = "api/users_bulk.rs"]
mod users_bulk;
#[path = "api/users_matrix.rs"]
mod users_matrix;
#[path = "api/users_support.rs"]
mod users_support;
