//! Web addresses the settings hold, parsed once when they are read: an
//! absolute http(s) URL and a browser origin. Each keeps the text it was
//! written as (what is compared and stored), checked; none is ever fetched
//! here.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An absolute http(s) URL; `with_path` allows a path (and query).
pub fn url_shape(raw: &str, with_path: bool) -> Result<url::Url, String> {
    let u = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host().is_none() || !u.username().is_empty() {
        return Err(format!("{raw:?} must be an http(s) URL with a host and no user"));
    }
    if u.fragment().is_some() || (!with_path && (u.path() != "/" || u.query().is_some())) {
        return Err(format!("{raw:?} must not have a {}", if with_path { "fragment" } else { "path" }));
    }
    Ok(u)
}

/// An absolute http(s) URL with a host, no user and no fragment (an
/// identity provider's issuer, a frontend's redirect URI).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpUrl(String);

impl HttpUrl {
    pub fn parse(raw: &str) -> Result<HttpUrl, String> {
        url_shape(raw, true).map(|_| HttpUrl(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A browser origin exactly as browsers send it (`https://app.example.com`,
/// `http://localhost:5173`): lower case, no path, no trailing slash, never `*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Origin(String);

impl Origin {
    pub fn parse(raw: &str) -> Result<Origin, String> {
        if raw == "*" {
            return Err("\"*\" is not allowed: list each origin exactly".into());
        }
        let parsed = url_shape(raw, false)?;
        let expected = parsed.origin().ascii_serialization();
        if expected != raw {
            return Err(format!("{raw:?} is not an origin as browsers send it (expected {expected:?})"));
        }
        Ok(Origin(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! text_value {
    ($($t:ident),*) => {$(
        impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(raw: String) -> Result<$t, String> {
                $t::parse(&raw)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
text_value!(HttpUrl, Origin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_be_exact_and_never_a_wildcard() {
        assert!(Origin::parse("https://app.example.com").is_ok());
        assert!(Origin::parse("http://localhost:5173").is_ok());
        for bad in ["*", "https://app.example.com/", "https://App.example.com", "app.example.com", "ftp://x.org"] {
            assert!(Origin::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn an_http_url_has_a_host_and_no_user_or_fragment() {
        assert!(HttpUrl::parse("https://idp.example.com/realms/a").is_ok());
        for bad in ["idp.example.com", "ftp://idp.example.com", "https://u@idp.example.com", "https://idp/x#y"] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
