//! Why a redemption code was refused: a stable code and a message each
//! (the HTTP layer gives each its status).

/// Why a redemption was refused. Only `Invalid` can be a guess; the others
/// name a code that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Invalid,
    Expired,
    UsedUp,
    AlreadyRedeemed,
}

impl Refusal {
    /// The stable error code.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Invalid => "code_invalid",
            Refusal::Expired => "code_expired",
            Refusal::UsedUp => "code_used_up",
            Refusal::AlreadyRedeemed => "code_already_redeemed",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::Invalid => "This code does not exist or has been disabled. Check it and try again.",
            Refusal::Expired => "This code can no longer be redeemed: its redemption period has ended.",
            Refusal::UsedUp => "This code has been redeemed as many times as it allows.",
            Refusal::AlreadyRedeemed => "You have already redeemed this code.",
        }
    }
}
