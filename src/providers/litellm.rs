//! LiteLLM's public price list (`model_prices_and_context_window.json`)
//! read into `[[models]] price` tables, so an operator does not copy
//! prices by hand. Reads text it is given; never downloads, never writes a
//! config.
//!
//! USD per token becomes integer credits per 1M tokens at the operator's
//! `credits_per_usd`. A price that is not a whole number of credits is
//! rounded up (never charging less than the provider bills) and the entry
//! says so.

use crate::config::{PriceConfig, PriceTierConfig};
use serde_json::Value;

/// Models one import prints at most.
pub const MODELS_MAX: usize = 1000;
/// The long-context threshold LiteLLM's `_above_200k_tokens` fields name.
const ABOVE_200K: u64 = 200_000;

/// One model's price table, with what the import had to round.
#[derive(Debug, Clone)]
pub struct Imported {
    pub name: String,
    pub kind: &'static str,
    pub price: PriceConfig,
    pub notes: Vec<String>,
}

/// The price tables of `names` (every model, when empty) in `text`, a
/// LiteLLM price list.
pub fn import(text: &str, credits_per_usd: u64, names: &[String]) -> Result<Vec<Imported>, String> {
    if credits_per_usd == 0 {
        return Err("--credits-per-usd must be at least 1".into());
    }
    let list: serde_json::Map<String, Value> =
        serde_json::from_str(text).map_err(|e| format!("not a LiteLLM price list (a JSON object by model): {e}"))?;
    let chosen: Vec<&String> = if names.is_empty() {
        list.keys().filter(|k| *k != "sample_spec").collect()
    } else {
        let missing: Vec<&str> = names.iter().filter(|n| !list.contains_key(*n)).map(String::as_str).collect();
        if !missing.is_empty() {
            return Err(format!("not in the price list: {}", missing.join(", ")));
        }
        names.iter().collect()
    };
    if chosen.len() > MODELS_MAX {
        return Err(format!("{} models: name at most {MODELS_MAX}", chosen.len()));
    }
    chosen.into_iter().map(|name| one(name, &list[name.as_str()], credits_per_usd)).collect()
}

fn one(name: &str, entry: &Value, credits_per_usd: u64) -> Result<Imported, String> {
    let mut notes = Vec::new();
    let mut per = |field: &str, unit: f64| -> Result<Option<i64>, String> {
        let Some(v) = entry.get(field) else { return Ok(None) };
        let usd =
            v.as_f64().filter(|u| u.is_finite() && *u >= 0.0).ok_or_else(|| format!("{name}.{field}: not a price"))?;
        let exact = usd * unit * credits_per_usd as f64;
        let whole = exact.round();
        if (exact - whole).abs() <= 1e-6 * whole.max(1.0) {
            return Ok(Some(whole as i64));
        }
        notes.push(format!("{field}: {exact} rounded up to {}", exact.ceil()));
        Ok(Some(exact.ceil() as i64))
    };
    let m = 1e6;
    let input = per("input_cost_per_token", m)?;
    let output = per("output_cost_per_token", m)?;
    let mut price = PriceConfig {
        input_per_1m: input.unwrap_or(0),
        output_per_1m: output.unwrap_or(0),
        cached_input_per_1m: per("cache_read_input_token_cost", m)?,
        cache_write_per_1m: per("cache_creation_input_token_cost", m)?,
        cache_write_1h_per_1m: per("cache_creation_input_token_cost_above_1hr", m)?,
        reasoning_per_1m: per("output_cost_per_reasoning_token", m)?,
        audio_input_per_1m: per("input_cost_per_audio_token", m)?,
        audio_output_per_1m: per("output_cost_per_audio_token", m)?,
        per_image: per("output_cost_per_image", 1.0)?.unwrap_or(0),
        per_video_second: per("output_cost_per_second", 1.0)?.unwrap_or(0),
        ..PriceConfig::default()
    };
    let tier = PriceTierConfig {
        above_input_tokens: ABOVE_200K,
        input_per_1m: per("input_cost_per_token_above_200k_tokens", m)?,
        output_per_1m: per("output_cost_per_token_above_200k_tokens", m)?,
        cached_input_per_1m: per("cache_read_input_token_cost_above_200k_tokens", m)?,
        cache_write_per_1m: per("cache_creation_input_token_cost_above_200k_tokens", m)?,
        ..PriceTierConfig::default()
    };
    if tier.input_per_1m.is_some() || tier.output_per_1m.is_some() {
        price.tiers.push(tier);
    }
    let kind = match entry.get("mode").and_then(Value::as_str) {
        Some("embedding") => "embedding",
        Some("image_generation") => "image",
        Some("video_generation") => "video",
        _ => "chat",
    };
    Ok(Imported { name: name.to_owned(), kind, price, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_per_token_becomes_credits_per_million_and_odd_prices_round_up() {
        let text = r#"{"m": {"input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
                        "cache_read_input_token_cost": 3.3e-08, "mode": "chat"}}"#;
        let got = import(text, 1000, &["m".into()]).unwrap();
        assert_eq!((got[0].price.input_per_1m, got[0].price.output_per_1m), (3000, 15000));
        assert_eq!(got[0].price.cached_input_per_1m, Some(33));
        let odd = import(r#"{"m": {"input_cost_per_token": 1.23456e-07}}"#, 1000, &[]).unwrap();
        assert_eq!(odd[0].price.input_per_1m, 124, "123.456 rounded up");
        assert_eq!(odd[0].notes.len(), 1);
        assert!(import(text, 1000, &["nope".into()]).unwrap_err().contains("nope"));
        assert!(import("[]", 1000, &[]).is_err());
        assert!(import(text, 0, &[]).is_err());
    }
}
