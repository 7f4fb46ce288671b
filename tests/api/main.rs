//! The one integration test binary: every test starts the real service on
//! an ephemeral port with a fresh SQLite file and talks to it over HTTP.
//! Helpers (the `TestApp`) live in `helpers`; one module per area.

mod endpoints;
mod fake_oidc;
mod fake_provider;
mod fake_stripe;
mod helpers;

mod ai;
mod alone;
mod architecture;
mod audio;
mod auth;
mod browser;
mod channels;
mod cli;
mod codes;
mod compat;
mod crash;
mod credits;
mod docs;
mod events;
mod front_door;
mod gemini;
mod grants;
mod guard;
mod http_edge;
mod idempotency;
mod instances;
mod jobs;
mod keys;
mod messages;
mod oidc;
mod ops;
mod payments;
mod postgres_cli;
mod pricing;
mod redis;
mod sessions;
mod usage;
