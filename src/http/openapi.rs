//! `/openapi.json`: an OpenAPI 3.1 document generated from the route table,
//! so a route cannot exist without being described. The component schemas
//! below are the wire shapes the handlers produce.

use super::route::Access;
use super::router::routes;
use super::routes;
use crate::ledger::{self, grants};
use crate::paging::List;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

fn int() -> Value {
    json!({"type": "integer"})
}
fn string() -> Value {
    json!({"type": "string"})
}
fn nullable(t: &str) -> Value {
    json!({"type": [t, "null"]})
}
fn time() -> Value {
    json!({"type": "string", "format": "date-time"})
}
fn object(required: &[&str], props: Value) -> Value {
    json!({"type": "object", "required": required, "properties": props})
}
fn list_of(item: &str) -> Value {
    object(
        &["object", "data", "has_more"],
        json!({"object": {"const": "list"}, "data": {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}}, "has_more": {"type": "boolean"}}),
    )
}

/// Schemas derived from the Rust types the handlers serialize (and the
/// request bodies they parse), named as the routes name them. Types not yet
/// derived are written out in [`components`] below.
fn derived() -> Map<String, Value> {
    let mut g =
        SchemaSettings::draft2020_12().with(|s| s.definitions_path = "/components/schemas".into()).into_generator();
    // Types registered under their own name; the call's result is a $ref.
    g.subschema_for::<ledger::Balance>();
    g.subschema_for::<ledger::Transaction>();
    g.subschema_for::<ledger::audit::AuditReport>();
    g.subschema_for::<grants::Grant>();
    g.subschema_for::<routes::grants::NewGrantBody>();
    g.subschema_for::<crate::codes::RedemptionCode>();
    g.subschema_for::<routes::codes::NewCodesBody>();
    g.subschema_for::<routes::codes::RedeemBody>();
    g.subschema_for::<crate::auth::key_limits::KeyLimitsBody>();
    g.subschema_for::<crate::auth::CreatedApiKey>();
    g.subschema_for::<routes::admin::UserDetail>();
    g.subschema_for::<crate::media::FileView>();
    g.subschema_for::<routes::webhooks::NewWebhookBody>();
    g.subschema_for::<crate::providers::admin::NewChannel>();
    g.subschema_for::<crate::providers::admin::ChannelPatch>();
    g.subschema_for::<crate::providers::admin::ChannelView>();
    g.subschema_for::<crate::providers::admin::KeyPatch>();
    g.subschema_for::<crate::providers::admin::KeyView>();
    g.subschema_for::<crate::providers::admin::NewModel>();
    g.subschema_for::<crate::providers::admin::ModelPatch>();
    g.subschema_for::<crate::providers::admin::ModelView>();
    g.subschema_for::<crate::providers::TestCall>();
    g.subschema_for::<routes::channels::TestBody>();
    g.subschema_for::<routes::channels::NewKeyBody>();
    g.subschema_for::<crate::events::endpoints::CreatedEndpoint>();
    g.subschema_for::<crate::events::Delivery>();
    g.subschema_for::<crate::auth::Tokens>();
    g.subschema_for::<crate::auth::LoginResponse>();
    g.subschema_for::<crate::auth::reset::ResetToken>();
    g.subschema_for::<routes::sessions::RefreshBody>();
    g.subschema_for::<routes::sessions::SessionsEnded>();
    g.subschema_for::<routes::sessions::PasswordChangeBody>();
    g.subschema_for::<routes::sessions::ResetRequestBody>();
    g.subschema_for::<routes::sessions::ResetAccepted>();
    g.subschema_for::<routes::sessions::ResetConfirmBody>();
    g.subschema_for::<routes::oidc::ExchangeBody>();
    g.subschema_for::<crate::usage::Report>();
    g.subschema_for::<routes::credits::Consume>();
    g.subschema_for::<ledger::Consumed>();
    g.subschema_for::<ledger::Validation>();
    g.subschema_for::<routes::admin::NewUser>();
    g.subschema_for::<routes::admin::Adjust>();
    g.subschema_for::<routes::auth::Credentials>();
    g.subschema_for::<routes::limits::SetLimits>();
    g.subschema_for::<routes::jobs::NewJob>();
    g.subschema_for::<routes::Deleted>();
    g.subschema_for::<routes::admin::UserUpdate>();
    g.subschema_for::<super::error::ErrorBody>();
    g.subschema_for::<routes::sessions::PasswordResetDone>();
    g.subschema_for::<routes::limits::LimitsView>();
    g.subschema_for::<routes::auth::Me>();
    g.subschema_for::<routes::payments::CatalogView<'static>>();
    g.subschema_for::<routes::payments::CheckoutBody>();
    g.subschema_for::<crate::payments::Checkout>();
    g.subschema_for::<routes::payments::PortalBody>();
    g.subschema_for::<routes::payments::PortalSession>();
    g.subschema_for::<routes::payments::AutoTopupBody>();
    g.subschema_for::<routes::payments::AutoTopupView>();
    g.subschema_for::<crate::payments::webhook::Received>();
    // Generic instances, under the names the routes use.
    let aliases = [
        ("TransactionList", g.subschema_for::<List<ledger::Transaction>>()),
        ("GrantList", g.subschema_for::<List<grants::Grant>>()),
        ("RedemptionCodeList", g.subschema_for::<List<crate::codes::RedemptionCode>>()),
        ("ApiKey", g.subschema_for::<crate::auth::ApiKeyView>()),
        ("UserList", g.subschema_for::<List<crate::users::User>>()),
        ("ApiKeyList", g.subschema_for::<List<crate::auth::ApiKeyView>>()),
        ("Endpoint", g.subschema_for::<crate::events::endpoints::Endpoint>()),
        ("EndpointList", g.subschema_for::<List<crate::events::endpoints::Endpoint>>()),
        ("DeliveryList", g.subschema_for::<List<crate::events::Delivery>>()),
        ("UsageReport", g.subschema_for::<crate::usage::Report>()),
        ("LogList", g.subschema_for::<List<crate::logs::LogEntry>>()),
        ("ChannelList", g.subschema_for::<List<crate::providers::admin::ChannelView>>()),
        ("CatalogModelList", g.subschema_for::<List<crate::providers::admin::ModelView>>()),
        ("PaymentList", g.subschema_for::<List<crate::payments::Payment>>()),
    ];
    let mut m = g.take_definitions(true);
    for (name, schema) in aliases {
        // A type registered under the route's own name already has its
        // definition there: the alias would be a reference to itself.
        let schema = schema.to_value();
        if schema.get("$ref").and_then(Value::as_str) != Some(&format!("#/components/schemas/{name}")) {
            m.insert(name.to_owned(), schema);
        }
    }
    m
}

/// Every schema a route names.
pub fn components() -> Map<String, Value> {
    let mut m = derived();
    let mut add = |name: &str, v: Value| {
        m.insert(name.to_owned(), v);
    };
    add("Status", object(&["status"], json!({"status": string()})));
    add("Metrics", json!({"type": "string", "description": "Prometheus text exposition format"}));
    add(
        "EventStream",
        json!({"type": "string", "description": "Server-sent events: `event: status` per job transition (id = the transition's id; data = {job_id, from, status, at, message}), then `event: job` with the final job object"}),
    );
    add(
        "Binary",
        json!({"type": "string", "contentMediaType": "application/octet-stream", "description": "The file's bytes, served with the type its bytes show (image/*, video/*)"}),
    );
    add("OpenApi", json!({"type": "object", "description": "This document"}));
    add("Html", json!({"type": "string", "contentMediaType": "text/html"}));
    add("Asset", json!({"type": "string", "description": "A static file of the console (script or styles)"}));
    add(
        "Redirect",
        json!({"type": "object", "description": "302 with a Location header; the body repeats it as {location}"}),
    );
    add(
        "LimitsSet",
        object(
            &["object", "user_id", "effective", "overrides"],
            json!({"object": {"const": "limits"}, "user_id": string(), "effective": {"type": "object"}, "overrides": {"type": "object"}}),
        ),
    );
    add(
        "Model",
        object(
            &["id", "object", "owned_by", "kind", "pricing"],
            json!({"id": string(), "object": {"const": "model"}, "created": int(), "owned_by": string(), "kind": {"enum": ["chat", "image", "video", "embedding", "speech", "transcription", "moderation"]},
                   "pricing": {"type": "object"}, "max_output_tokens": nullable("integer"), "image_input_tokens_max": nullable("integer"), "description": string()}),
        ),
    );
    add("ModelList", list_of("Model"));
    add(
        "ResponsesRequest",
        object(
            &["model", "input"],
            json!({"model": string(), "input": {"oneOf": [string(), {"type": "array"}]}, "instructions": string(),
                   "max_output_tokens": int(), "stream": {"type": "boolean"}, "tools": {"type": "array"}, "previous_response_id": string()}),
        ),
    );
    add(
        "ResponseObject",
        object(
            &["id", "object", "model"],
            json!({"id": string(), "object": {"const": "response"}, "model": string(), "output": {"type": "array"},
                   "usage": {"type": "object"}, "tollgate": {"type": "object"}}),
        ),
    );
    // Anthropic's Messages format (theirs, not ours): the fields tollgate
    // reads; every other field goes to the provider as sent.
    add(
        "MessagesRequest",
        object(
            &["model", "messages"],
            json!({"model": string(), "messages": {"type": "array", "items": object(&["role", "content"], json!({"role": {"enum": ["user", "assistant"]}, "content": {}}))},
                   "max_tokens": int(), "system": {}, "stream": {"type": "boolean"}, "tools": {"type": "array"}, "tool_choice": {"type": "object"}}),
        ),
    );
    add(
        "Message",
        json!({"description": "An Anthropic message; with stream: true, text/event-stream of message_start, content_block_*, message_delta, message_stop",
               "type": "object", "required": ["id", "type", "role", "model", "content", "usage"],
               "properties": {"id": string(), "type": {"const": "message"}, "role": {"const": "assistant"}, "model": string(),
                              "content": {"type": "array", "items": {"type": "object"}}, "stop_reason": nullable("string"),
                              "usage": {"type": "object"}, "tollgate": {"type": "object"}}}),
    );
    // Gemini's format (Google's, not ours): the fields tollgate reads.
    add(
        "GenerateContentRequest",
        object(
            &["contents"],
            json!({"contents": {"type": "array", "items": {"type": "object"}}, "systemInstruction": {"type": "object"},
                   "generationConfig": {"type": "object", "properties": {"maxOutputTokens": int(), "candidateCount": int()}},
                   "tools": {"type": "array"}, "cachedContent": string()}),
        ),
    );
    add(
        "GenerateContentResponse",
        json!({"description": "A Gemini GenerateContentResponse; streamGenerateContent?alt=sse sends one per `data:` event (countTokens: {totalTokens})",
               "type": "object", "properties": {"candidates": {"type": "array", "items": {"type": "object"}},
                                                "usageMetadata": {"type": "object"}, "tollgate": {"type": "object"}}}),
    );
    add(
        "SpeechRequest",
        object(
            &["model", "input", "voice"],
            json!({"model": string(), "input": string(), "voice": string(), "response_format": string(), "speed": {"type": "number"}, "instructions": string()}),
        ),
    );
    add(
        "Transcription",
        json!({"description": "The provider's transcription: JSON ({text, usage?, tollgate}) for json and verbose_json, text for text, srt and vtt (the cost then in X-Tollgate-Cost headers). The request is multipart/form-data: file, model, and any other field OpenAI takes.",
               "type": ["object", "string"]}),
    );
    add("ModerationRequest", object(&["model", "input"], json!({"model": string(), "input": {}})));
    add(
        "Moderation",
        object(
            &["id", "model", "results"],
            json!({"id": string(), "model": string(), "results": {"type": "array"}, "tollgate": {"type": "object"}}),
        ),
    );
    add("TokenCount", object(&["input_tokens"], json!({"input_tokens": int(), "tollgate": {"type": "object"}})));
    add(
        "EmbeddingsRequest",
        object(
            &["model", "input"],
            json!({"model": string(), "input": {"oneOf": [string(), {"type": "array"}]}, "encoding_format": string(), "dimensions": int(), "user": string()}),
        ),
    );
    add(
        "Embeddings",
        object(
            &["object", "data", "model", "usage"],
            json!({"object": {"const": "list"}, "data": {"type": "array", "items": {"type": "object"}}, "model": string(),
                   "usage": {"type": "object"}, "tollgate": {"type": "object"}}),
        ),
    );
    add(
        "ChatRequest",
        object(
            &["model", "messages"],
            json!({"model": string(), "messages": {"type": "array", "items": object(&["role"], json!({"role": {"enum": ["system", "developer", "user", "assistant", "tool"]}, "content": {}}))},
                   "max_tokens": int(), "max_completion_tokens": int(), "stream": {"type": "boolean"},
                   "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
                   "temperature": {"type": "number"}, "top_p": {"type": "number"}, "stop": {}, "n": {"const": 1}}),
        ),
    );
    add(
        "ChatCompletion",
        json!({"description": "An OpenAI chat.completion object; with stream: true, text/event-stream of chat.completion.chunk objects ending in data: [DONE]",
               "type": "object", "required": ["id", "object", "created", "model", "choices", "usage"],
               "properties": {"id": string(), "object": {"const": "chat.completion"}, "created": int(), "model": string(),
                              "choices": {"type": "array", "items": {"type": "object"}},
                              "usage": object(&["prompt_tokens", "completion_tokens", "total_tokens"], json!({"prompt_tokens": int(), "completion_tokens": int(), "total_tokens": int()})),
                              "tollgate": object(&["cost", "transaction_id"], json!({"cost": int(), "transaction_id": nullable("string")}))}}),
    );
    add(
        "ImageRequest",
        object(
            &["model", "prompt"],
            json!({"model": string(), "prompt": string(), "n": {"type": "integer", "minimum": 1, "maximum": 10}, "size": string(), "response_format": {"const": "url"}}),
        ),
    );
    add(
        "ImagesResponse",
        object(
            &["created", "data"],
            json!({"created": int(), "data": {"type": "array", "items": object(&["url"], json!({"url": string()}))},
                   "tollgate": object(&["cost", "transaction_id"], json!({"cost": int(), "transaction_id": nullable("string")}))}),
        ),
    );
    add(
        "Job",
        object(
            &[
                "id",
                "object",
                "type",
                "model",
                "status",
                "input",
                "output",
                "error",
                "estimated_cost",
                "credit_cost",
                "hold_id",
                "transaction_id",
                "attempts",
                "created_at",
                "started_at",
                "finished_at",
                "events",
            ],
            json!({"id": string(), "object": {"const": "job"}, "type": {"enum": ["text_generation", "image_generation", "video_generation"]},
                   "model": string(), "status": {"enum": ["queued", "processing", "completed", "failed", "canceled"]},
                   "input": {"type": "object"}, "output": {"type": ["object", "null"]},
                   "error": {"type": ["object", "null"], "properties": {"code": string(), "message": string()}},
                   "estimated_cost": int(), "credit_cost": nullable("integer"), "hold_id": nullable("string"), "transaction_id": nullable("string"),
                   "attempts": int(), "created_at": time(), "started_at": {"type": ["string", "null"]}, "finished_at": {"type": ["string", "null"]},
                   "events": {"type": "array", "items": object(&["status", "at", "message"], json!({"status": string(), "at": time(), "message": string()}))}}),
        ),
    );
    add("JobList", list_of("Job"));
    m
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in routes() {
        let mut op = Map::new();
        op.insert("summary".into(), json!(r.doc.summary));
        op.insert("operationId".into(), json!(format!("{} {}", r.method, r.path)));
        let mut params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        params.extend(
            r.query
                .unwrap_or_default()
                .iter()
                .map(|name| json!({"name": name, "in": "query", "required": false, "schema": {"type": "string"}})),
        );
        if !params.is_empty() {
            op.insert("parameters".into(), json!(params));
        }
        if let Some(body) = r.doc.body {
            op.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}}}),
            );
        }
        let content_type = match r.doc.schema {
            "Metrics" => "text/plain",
            "EventStream" => "text/event-stream",
            "Binary" => "application/octet-stream",
            "Html" => "text/html",
            "Asset" => "text/plain",
            _ => "application/json",
        };
        let mut responses = Map::new();
        responses.insert(
            r.doc.ok.to_string(),
            json!({"description": "Success", "content": {content_type: {"schema": {"$ref": format!("#/components/schemas/{}", r.doc.schema)}}}}),
        );
        responses.insert("default".into(), error_response("An error in the contract's shape"));
        op.insert("responses".into(), Value::Object(responses));
        // Which credential kinds a route takes: a session's access token,
        // and an API key only where the route allows keys.
        match r.access {
            Access::Public => {}
            Access::User => {
                op.insert("security".into(), json!([{"session": []}, {"api_key": []}]));
            }
            Access::Session | Access::Admin => {
                op.insert("security".into(), json!([{"session": []}]));
            }
        }
        let entry = paths.entry(r.path.to_owned()).or_insert_with(|| json!({}));
        if let Some(obj) = entry.as_object_mut() {
            obj.insert(r.method.to_ascii_lowercase(), Value::Object(op));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "tollgate",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Authenticate, meter and bill AI generation calls against an exact credit ledger.",
            "license": {"name": "MIT", "identifier": "MIT"}
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components(),
            "securitySchemes": {
                "session": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "An access token from /v1/auth/login (or refresh, or a sign-in): every authenticated route"},
                "api_key": {"type": "http", "scheme": "bearer", "description": "An API key (tg_...): only the routes that list it; the others answer 403 key_not_allowed"}
            }
        }
    })
}
