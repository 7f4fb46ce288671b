//! What the streamed AI answers (chat, responses) share: a body produced
//! piece by piece as the provider's events arrive ([`Pumped`]), and the
//! charge that settles when the stream ends, or when the client leaves
//! first ([`StreamCharge`], which settles on drop).
//!
//! Never formats a provider's events; each endpoint's [`Pump`] does.

use crate::app::App;
use crate::domain::{Credits, UserId};
use crate::ledger::Cost;
use crate::logs::NewLog;
use crate::metered::{self, Reservation};
use crate::providers::types::Usage;
use crate::providers::{CallInfo, Model};
use serde_json::json;
use std::io::Read;
use std::sync::Arc;

/// The business log of a metered call (`action`: `ai_chat_completion`,
/// `ai_response`), with what the ledger row does not carry.
pub fn call_log(
    action: &'static str,
    model: &Model,
    info: &CallInfo,
    usage: &Usage,
    stream: bool,
    user: UserId,
    outcome: &str,
) -> NewLog {
    NewLog::business(
        user,
        action,
        true,
        json!({"model": model.name, "provider": info.provider, "upstream_model": info.upstream_model,
               "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens},
               "latency_ms": info.latency_ms, "stream": stream, "outcome": outcome}),
    )
}

/// The ledger description of a metered call (`what`: `chat`, `response`).
pub fn call_description(what: &str, model: &Model, usage: &Usage) -> String {
    format!("{what} {} ({} in / {} out tokens)", model.priced_name(), usage.prompt_tokens, usage.completion_tokens)
}

/// The charge of one streamed call: settled once, from the usage the
/// provider reported, or, when it reported none, as [`Unreported`] says.
pub struct StreamCharge {
    app: Arc<App>,
    pub model: Model,
    info: CallInfo,
    reservation: Reservation,
    action: &'static str,
    what: &'static str,
    pub usage: Option<Usage>,
    /// The call's token bounds (input, output), as the hold priced them.
    tokens_bound: (u64, u64),
    /// Bytes of generated output relayed to the client so far (text and
    /// tool-call arguments): no tokenizer makes more tokens than bytes.
    pub relayed_bytes: u64,
    settled: bool,
}

/// What a stream the provider reported no usage for is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreported {
    /// The provider failed: nothing (an upstream error is free).
    Free,
    /// The stream ended, or the client left: the input bound and the
    /// output relayed, counted as one token per byte (at most the output
    /// bound). Never zero for output the client received, never the whole
    /// bound for a stream cut short.
    Counted,
}

impl StreamCharge {
    pub fn new(
        app: Arc<App>,
        model: Model,
        info: CallInfo,
        reservation: Reservation,
        action: &'static str,
        what: &'static str,
        tokens_bound: (u64, u64),
    ) -> StreamCharge {
        StreamCharge {
            app,
            model,
            info,
            reservation,
            action,
            what,
            usage: None,
            tokens_bound,
            relayed_bytes: 0,
            settled: false,
        }
    }

    /// The caller's price group factor, fixed at reservation.
    pub fn multiplier_micro(&self) -> i64 {
        self.reservation.multiplier_micro
    }

    pub fn settle(&mut self, outcome: &str, unreported: Unreported) {
        if self.settled {
            return;
        }
        self.settled = true;
        let (usage, cost) = match (self.usage, unreported) {
            (Some(u), _) => (u, metered::chat_cost(&self.model, &u, self.reservation.multiplier_micro)),
            (None, Unreported::Free) => (Usage::default(), Cost::Credits(Credits::ZERO)),
            (None, Unreported::Counted) => {
                let (input, output) = self.tokens_bound;
                let u = Usage::tokens(input, self.relayed_bytes.min(output));
                (u, metered::chat_cost(&self.model, &u, self.reservation.multiplier_micro))
            }
        };
        let log = call_log(self.action, &self.model, &self.info, &usage, true, self.reservation.user, outcome);
        let (r, desc) = (self.reservation, call_description(self.what, &self.model, &usage));
        let detail = metered::cost_detail(&self.model, &usage, self.reservation.multiplier_micro);
        let used = metered::carried(&self.app, &self.info, metered::used_tokens(&self.model, &usage, &detail));
        if let Err(e) = self.app.db.write_for_user(r.lock, move |c| metered::settle_in(c, &r, cost, &desc, &log, &used))
        {
            log::error!("could not settle a streamed {}: {e}; its hold will expire uncharged", self.what);
        }
    }
}

impl Drop for StreamCharge {
    /// Dropped before the stream ended: the client went away.
    fn drop(&mut self) {
        self.settle("client_disconnected", Unreported::Counted);
    }
}

/// Produces a streamed body: each call appends the next piece to `out`;
/// `false` once the piece it appended was the last.
pub trait Pump: Send {
    fn pump(&mut self, out: &mut Vec<u8>) -> bool;
}

/// A `Read` over a [`Pump`], pulling a piece only when the last is sent.
pub struct Pumped<P: Pump> {
    pump: P,
    buf: Vec<u8>,
    pos: usize,
    finished: bool,
}

impl<P: Pump> Pumped<P> {
    pub fn new(pump: P) -> Pumped<P> {
        Pumped { pump, buf: Vec::new(), pos: 0, finished: false }
    }
}

impl<P: Pump> Read for Pumped<P> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            if self.finished {
                return Ok(0);
            }
            self.buf.clear();
            self.pos = 0;
            self.finished = !self.pump.pump(&mut self.buf);
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
