//! What the mappings of an OpenAI chat request onto another wire format
//! (`anthropic.rs`, `google.rs`) share: the client's messages, the text of
//! a content, turns merged by role, and the function tools and tool choice
//! read from the client's body. Never builds a provider's body itself.

use super::types::ChatRequest;
use serde_json::{Value, json};
use std::borrow::Cow;

/// The client's messages as sent (tool calls, image parts), or, for a
/// request tollgate built itself, its plain messages in the same shape.
pub fn messages(req: &ChatRequest) -> Cow<'_, [Value]> {
    match req.passthrough.get("messages").and_then(Value::as_array) {
        Some(items) => Cow::Borrowed(items),
        None => Cow::Owned(req.messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect()),
    }
}

/// The text of an OpenAI `content`: a string, or its text parts joined.
pub fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect(),
        _ => String::new(),
    }
}

/// Appends `items` to the last turn when it has `role`, else starts one:
/// providers that want roles to alternate get consecutive turns merged.
pub fn push_turn(turns: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, items: Vec<Value>) {
    match turns.last_mut() {
        Some((last, existing)) if *last == role => existing.extend(items),
        _ => turns.push((role, items)),
    }
}

/// One function of the client's `tools`.
pub struct FunctionTool<'a> {
    /// The name, `""` when the client sent none.
    pub name: Value,
    pub description: Option<&'a Value>,
    /// The JSON schema of the arguments.
    pub parameters: Option<&'a Value>,
}

/// The client's `tools` (each a `function`, or a bare function object),
/// `None` when it sent no list.
pub fn function_tools(req: &ChatRequest) -> Option<Vec<FunctionTool<'_>>> {
    let tools = req.passthrough.get("tools").and_then(Value::as_array)?;
    Some(
        tools
            .iter()
            .map(|t| {
                let f = t.get("function").unwrap_or(t);
                FunctionTool {
                    name: f.get("name").cloned().unwrap_or(json!("")),
                    description: f.get("description"),
                    parameters: f.get("parameters"),
                }
            })
            .collect(),
    )
}

/// The client's `tool_choice`.
pub enum ToolChoice<'a> {
    Auto,
    /// `required`: some tool must be called.
    Required,
    /// `none`: no tool may be called.
    Nothing,
    /// `{"type": "function", "function": {"name": ..}}`: this one.
    Function(&'a Value),
}

/// `None` when the client sent no `tool_choice` (or one naming no function).
pub fn tool_choice(req: &ChatRequest) -> Option<ToolChoice<'_>> {
    match req.passthrough.get("tool_choice")? {
        Value::String(s) if s == "required" => Some(ToolChoice::Required),
        Value::String(s) if s == "none" => Some(ToolChoice::Nothing),
        Value::String(_) => Some(ToolChoice::Auto),
        Value::Object(o) => o.get("function").and_then(|f| f.get("name")).map(ToolChoice::Function),
        _ => None,
    }
}
