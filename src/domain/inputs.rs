//! Parsed user inputs: an `Email` is known to look like one, a `Password`
//! is known to be within bounds, a `Role` is one of two values.

use serde::Serialize;
use std::fmt;

/// RFC 5321 caps a path at 256 octets; an address longer than that is not real.
pub const EMAIL_BYTES_MAX: usize = 254;
/// Long enough for a passphrase, short enough that hashing it is cheap.
pub const PASSWORD_BYTES_MAX: usize = 256;
pub const PASSWORD_CHARS_MIN: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Lower-cases and checks the shape `local@domain.tld`. Deliverability is
    /// not our business; a typo-proof shape is.
    pub fn parse(raw: &str) -> Result<Email, String> {
        let s = raw.trim().to_ascii_lowercase();
        if s.is_empty() || s.len() > EMAIL_BYTES_MAX {
            return Err(format!("email must be 1 to {EMAIL_BYTES_MAX} characters"));
        }
        let Some((local, domain)) = s.split_once('@') else {
            return Err("email must look like name@example.com".into());
        };
        let ok = !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
            && !domain.contains('@');
        if !ok {
            return Err("email must look like name@example.com".into());
        }
        Ok(Email(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A new password being set. Login compares whatever was sent and does not
/// need this type: a wrong password is just wrong.
pub struct Password(String);

impl Password {
    pub fn parse(raw: &str) -> Result<Password, String> {
        let chars = raw.chars().count();
        if chars < PASSWORD_CHARS_MIN || raw.len() > PASSWORD_BYTES_MAX {
            return Err(format!(
                "password must be at least {PASSWORD_CHARS_MIN} characters and at most {PASSWORD_BYTES_MAX} bytes"
            ));
        }
        if is_common(raw) {
            return Err("it is one of the most common passwords, the first an attacker tries".into());
        }
        Ok(Password(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The built-in list of passwords too common to allow.
const COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");

fn is_common(raw: &str) -> bool {
    let candidate = raw.trim().to_lowercase();
    COMMON_PASSWORDS.lines().any(|l| !l.starts_with('#') && l == candidate)
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_normalised_and_checked() {
        assert_eq!(Email::parse(" Ann@Example.COM ").unwrap().as_str(), "ann@example.com");
        for bad in ["", "ann", "ann@", "@x.io", "ann@localhost", "a b@x.io", "a@b@x.io", "a@.io"] {
            assert!(Email::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn password_bounds() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse(&"x".repeat(PASSWORD_BYTES_MAX + 1)).is_err());
        assert!(Password::parse("correct horse").is_ok());
        assert!(Password::parse(&"x".repeat(PASSWORD_BYTES_MAX)).is_ok(), "exactly the limit is allowed");
        assert!(
            Password::parse("1234567").is_err() && Password::parse("x1234567").is_ok(),
            "8 characters is the least"
        );
        for common in ["password1", "Password1", "QWERTYUIOP", "iloveyou", "12345678"] {
            assert!(Password::parse(common).is_err(), "{common} accepted");
        }
    }
}
