//! One helper per endpoint a test calls often, by area, on `Client` (so a
//! `TestApp` and a server process alike use them), and the paths as
//! constants for the tests that send a raw body or headers. A test reads
//! like the API: `client.consume(&token, 7)`, not a path typed out again.

use crate::helpers::{Client, Resp};
use serde_json::{Value, json};

pub const CONSUME: &str = "/v1/credits/consume";
pub const BALANCE: &str = "/v1/credits/balance";
pub const TRANSACTIONS: &str = "/v1/credits/transactions";
pub const ME: &str = "/v1/me";
pub const API_KEYS: &str = "/v1/api-keys";
pub const JOBS: &str = "/v1/jobs";
pub const CHAT: &str = "/v1/chat/completions";
pub const IMAGES: &str = "/v1/images/generations";
pub const EMBEDDINGS: &str = "/v1/embeddings";
pub const RESPONSES: &str = "/v1/responses";
pub const ADMIN_USERS: &str = "/v1/admin/users";
pub const ADMIN_AUDIT: &str = "/v1/admin/audit";
pub const ADMIN_WEBHOOKS: &str = "/v1/admin/webhooks";

/// Credits.
impl Client {
    /// `POST /v1/credits/consume` of `amount`.
    pub fn consume(&self, token: &str, amount: i64) -> Resp {
        self.post(CONSUME, token, json!({ "amount": amount }))
    }

    pub fn balance(&self, token: &str) -> Resp {
        self.get(BALANCE, token)
    }

    pub fn transactions(&self, token: &str) -> Resp {
        self.get(TRANSACTIONS, token)
    }
}

/// The account and its keys.
impl Client {
    pub fn me(&self, token: &str) -> Resp {
        self.get(ME, token)
    }

    /// `POST /v1/api-keys` with a name and limits.
    pub fn create_key(&self, token: &str, body: Value) -> Resp {
        self.post(API_KEYS, token, body)
    }

    pub fn list_keys(&self, token: &str) -> Resp {
        self.get(API_KEYS, token)
    }
}

/// AI calls (OpenAI wire format).
impl Client {
    pub fn chat(&self, token: &str, body: Value) -> Resp {
        self.post(CHAT, token, body)
    }

    pub fn images(&self, token: &str, body: Value) -> Resp {
        self.post(IMAGES, token, body)
    }

    pub fn embeddings(&self, token: &str, body: Value) -> Resp {
        self.post(EMBEDDINGS, token, body)
    }

    pub fn responses(&self, token: &str, body: Value) -> Resp {
        self.post(RESPONSES, token, body)
    }
}

/// Jobs.
impl Client {
    pub fn create_job(&self, token: &str, body: Value) -> Resp {
        self.post(JOBS, token, body)
    }

    pub fn jobs(&self, token: &str) -> Resp {
        self.get(JOBS, token)
    }
}

/// Administration.
impl Client {
    /// `POST /v1/admin/users`.
    pub fn create_user(&self, admin: &str, body: Value) -> Resp {
        self.post(ADMIN_USERS, admin, body)
    }

    pub fn audit(&self, admin: &str) -> Resp {
        self.get(ADMIN_AUDIT, admin)
    }

    /// `POST /v1/admin/webhooks`.
    pub fn create_webhook(&self, admin: &str, body: Value) -> Resp {
        self.post(ADMIN_WEBHOOKS, admin, body)
    }
}
