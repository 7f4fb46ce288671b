//! # tollgate
//!
//! A single-binary service between an AI product and its model providers:
//! it authenticates every call, charges exactly what it cost against an
//! append-only credit ledger, refuses what would break a budget, and keeps
//! everything in one SQLite file by default (PostgreSQL when several
//! instances share one database).
//!
//! Where to start reading:
//! - [`cli`]: the binary's commands; `serve` calls [`service::Service::start`].
//! - [`http::router`]: the route table and the request path.
//! - [`ledger`]: every credit write, holds, the hash chain and the audit.
//! - [`storage`]: the SQLite file, migrations and the group-commit writer.
//!
//! `ARCHITECTURE.md` has the map and the invariants each module keeps.

pub mod app;
pub mod auth;
pub mod cli;
pub mod codes;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod guard;
pub mod http;
pub mod idempotency;
pub mod jobs;
pub mod ledger;
pub mod logs;
pub mod media;
pub mod metered;
pub mod metrics;
pub mod migrate_pg;
pub mod oidc;
pub mod ops;
pub mod paging;
pub mod payments;
pub mod providers;
pub mod service;
pub mod storage;
pub mod support;
pub mod usage;
pub mod users;
