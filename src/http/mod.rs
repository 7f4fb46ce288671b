//! The HTTP edge: a tiny_http listener, a fixed pool of worker threads, the
//! router, and the JSON request/response/error helpers.
//!
//! Everything a client sends is parsed here into domain types before any
//! service code runs. This layer never writes SQL and never decides a
//! business rule; it maps service results and errors to HTTP.

pub mod cors;
pub mod edge;
pub mod error;
pub mod multipart;
pub mod openapi;
pub mod request;
pub mod response;
pub mod route;
pub mod router;
pub mod routes;
pub mod server;
pub mod state;
mod strict_json;
