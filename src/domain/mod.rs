//! Domain types shared by every layer: typed ids, credit amounts, timestamps,
//! roles and parsed inputs.
//!
//! Everything here parses at the edge and is trusted afterwards. This module
//! never touches the database or HTTP; it only defines what a valid value is.

mod credits;
mod event_type;
mod ids;
mod inputs;
mod schema;
mod time;
mod web;

pub use credits::{CREDITS_AMOUNT_MAX, Credits, MULTIPLIER_ONE_MICRO, scale_up};
pub use event_type::{EVENT_TYPES_MAX, EventType, check_event_types};
pub use ids::{
    ApiKeyId, CodeId, DeliveryId, EndpointId, FileId, GrantId, HoldId, JobId, LogId, PaymentId, TOTAL_SHARDS, TxnId,
    UserId, total_shard,
};
pub use inputs::{Email, Password, Role};
pub use time::{Timestamp, day_number, day_start};
pub use web::{HttpUrl, Origin, url_shape};
