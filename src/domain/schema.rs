//! JSON Schemas of the domain's wire types, for `/openapi.json`: what each
//! serializes to (an id is a prefixed string, credits an integer, a time an
//! RFC 3339 string). Derived schemas of the types that hold these use them,
//! so the document follows the code. Never used to validate input.

use super::{
    ApiKeyId, CodeId, Credits, DeliveryId, EndpointId, FileId, GrantId, HoldId, JobId, LogId, PaymentId, Timestamp,
    TxnId, UserId,
};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use std::borrow::Cow;

impl JsonSchema for Credits {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Credits".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "integer", "description": "Whole credits"})
    }
}

impl JsonSchema for Timestamp {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Timestamp".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "format": "date-time"})
    }
}

macro_rules! id_schema {
    ($($name:ident),*) => {$(
        impl JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({"type": "string", "pattern": format!("^{}[0-9]+$", $name::PREFIX)})
            }
        }
    )*};
}

id_schema!(UserId, TxnId, JobId, HoldId, ApiKeyId, LogId, GrantId, CodeId, EndpointId, DeliveryId, FileId, PaymentId);
