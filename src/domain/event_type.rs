//! The event types of the outbox and webhooks: their wire names are the
//! contract (README, docs/API.md).

/// Event types one webhook endpoint may list.
pub const EVENT_TYPES_MAX: usize = 32;

/// What happened. The wire names are the contract (README, docs/API.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum EventType {
    JobCompleted,
    JobFailed,
    JobCanceled,
    CreditsLow,
    CreditsGranted,
    UserCreated,
    PasswordResetRequested,
    IdentityLinked,
    ChannelDisabled,
    PaymentSucceeded,
    PaymentRefunded,
    PaymentFailed,
    SubscriptionRenewed,
}

impl EventType {
    pub const ALL: [EventType; 13] = [
        EventType::JobCompleted,
        EventType::JobFailed,
        EventType::JobCanceled,
        EventType::CreditsLow,
        EventType::CreditsGranted,
        EventType::UserCreated,
        EventType::PasswordResetRequested,
        EventType::IdentityLinked,
        EventType::ChannelDisabled,
        EventType::PaymentSucceeded,
        EventType::PaymentRefunded,
        EventType::PaymentFailed,
        EventType::SubscriptionRenewed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::JobCompleted => "job.completed",
            EventType::JobFailed => "job.failed",
            EventType::JobCanceled => "job.canceled",
            EventType::CreditsLow => "credits.low",
            EventType::CreditsGranted => "credits.granted",
            EventType::UserCreated => "user.created",
            EventType::PasswordResetRequested => "user.password_reset_requested",
            EventType::IdentityLinked => "user.identity_linked",
            EventType::ChannelDisabled => "channel.disabled",
            EventType::PaymentSucceeded => "payment.succeeded",
            EventType::PaymentRefunded => "payment.refunded",
            EventType::PaymentFailed => "payment.failed",
            EventType::SubscriptionRenewed => "subscription.renewed",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl TryFrom<String> for EventType {
    type Error = String;
    fn try_from(name: String) -> Result<EventType, String> {
        EventType::parse(&name).ok_or_else(|| {
            format!("{name:?} is not an event type; known: {}", EventType::ALL.map(EventType::as_str).join(", "))
        })
    }
}

impl From<EventType> for &'static str {
    fn from(t: EventType) -> &'static str {
        t.as_str()
    }
}

/// The event types a webhook endpoint lists (an empty list means all of
/// them): each a known name, at most [`EVENT_TYPES_MAX`].
pub fn check_event_types(types: &[String]) -> Result<(), String> {
    if types.len() > EVENT_TYPES_MAX {
        return Err(format!("at most {EVENT_TYPES_MAX} event types"));
    }
    types.iter().try_for_each(|t| EventType::try_from(t.clone()).map(|_| ()))
}
