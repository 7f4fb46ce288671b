//! "Sign in with ..." through OpenID Connect: the authorization code flow
//! with PKCE, `state` and `nonce` (`[oidc.<name>]`).
//!
//! `/start` stores a pending sign-in (keyed by the hash of `state`, with the
//! nonce and PKCE verifier) and redirects the browser to the provider. The
//! provider sends it back to `/callback`, which takes the pending sign-in
//! once, exchanges the code at the provider's token endpoint, verifies the ID
//! token (signature RS256/ES256 against the provider's key set, refetched
//! once when a key id is unknown; `iss`, `aud`, `exp`, `nonce`), finds or
//! creates the user linked to (issuer, subject), and redirects to the
//! frontend with a one-time code. The frontend exchanges that code at
//! `POST /v1/auth/oidc/exchange` for tokens: tokens never travel in a URL.
//!
//! Discovery, key sets and token verification are the `openidconnect`
//! crate's; this module never parses a JWT itself. Provider metadata is
//! fetched on first use and kept [`METADATA_TTL_S`].

use crate::storage::Conn;
pub mod http_client;
pub mod storage;

use crate::auth;
use crate::config::{AuthConfig, OidcConfig};
use crate::domain::{Email, Timestamp, UserId};
use crate::error::account::Refusal;
use crate::error::{Error, Result};
use crate::events::{self, EventType};
use crate::logs::{self, NewLog};
use crate::storage::Db;
use crate::support::token;
use crate::users;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreIdTokenVerifier, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, JsonWebKeySet, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    SignatureVerificationError, TokenResponse,
};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const OIDC_CODE_PREFIX: &str = "tgc_";
/// A sign-in must come back from the provider within this.
pub const OIDC_LOGIN_TTL_S: i64 = 600;
/// The frontend must exchange its code within this.
pub const OIDC_CODE_TTL_S: i64 = 60;
/// Provider metadata (endpoints, keys) is discovered again after this.
pub const METADATA_TTL_S: u64 = 3_600;
/// An unknown key id refetches the key set at most this often per provider
/// (a flood of forged tokens cannot turn into a flood of fetches).
pub const JWKS_REFRESH_INTERVAL_MIN_S: u64 = 10;
/// The frontend's own `state`, echoed back to it.
pub const CLIENT_STATE_BYTES_MAX: usize = 512;

/// A client made from discovery: an authorization endpoint, and a token and
/// user-info endpoint if the provider named them.
type DiscoveredClient =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

struct Provider {
    name: String,
    cfg: OidcConfig,
    issuer: IssuerUrl,
    secret: ClientSecret,
    callback: RedirectUrl,
}

struct Cached {
    metadata: Arc<CoreProviderMetadata>,
    fetched: Instant,
    jwks_refreshed: Option<Instant>,
}

/// The configured identity providers and what was learned of them.
pub struct Providers {
    providers: BTreeMap<String, Provider>,
    cache: Mutex<HashMap<String, Cached>>,
    agent: ureq::Agent,
}

/// Where `/callback` sends the browser.
pub struct Redirect(pub String);

/// What a verified ID token says about who signed in.
struct Identity {
    subject: String,
    email: Option<String>,
    email_verified: bool,
}

fn refused(r: Refusal) -> Error {
    Error::Account(r)
}

fn provider_error(what: &str, e: impl std::fmt::Display) -> Error {
    refused(Refusal::OidcProviderError(format!("{what}: {e}")))
}

impl Providers {
    /// Reads each provider's client secret from the environment (`env`);
    /// `public_url` is where browsers reach this service (for the callback).
    pub fn new(
        configs: &BTreeMap<String, OidcConfig>,
        public_url: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> std::result::Result<Providers, String> {
        let mut providers = BTreeMap::new();
        for (name, cfg) in configs {
            let secret = env(&cfg.client_secret_env)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("oidc.{name}: the environment variable {} is not set", cfg.client_secret_env))?;
            let issuer = IssuerUrl::new(cfg.issuer.to_string()).map_err(|e| format!("oidc.{name}.issuer: {e}"))?;
            let callback = format!("{}/v1/auth/oidc/{name}/callback", public_url.trim_end_matches('/'));
            let callback = RedirectUrl::new(callback).map_err(|e| format!("oidc.{name}: callback URL: {e}"))?;
            providers.insert(
                name.clone(),
                Provider { name: name.clone(), cfg: cfg.clone(), issuer, secret: ClientSecret::new(secret), callback },
            );
        }
        Ok(Providers { providers, cache: Mutex::new(HashMap::new()), agent: http_client::agent() })
    }

    fn provider(&self, name: &str) -> Result<&Provider> {
        self.providers.get(name).ok_or_else(|| refused(Refusal::OidcProviderNotFound))
    }

    /// The provider's metadata, discovered on first use and after [`METADATA_TTL_S`].
    fn metadata(&self, p: &Provider) -> Result<Arc<CoreProviderMetadata>> {
        if let Some(c) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&p.name)
            && c.fetched.elapsed() < Duration::from_secs(METADATA_TTL_S)
        {
            return Ok(Arc::clone(&c.metadata));
        }
        let http = |r| http_client::call(&self.agent, r);
        let metadata = Arc::new(
            CoreProviderMetadata::discover(&p.issuer, &http).map_err(|e| provider_error("discovery failed", e))?,
        );
        let cached = Cached { metadata: Arc::clone(&metadata), fetched: Instant::now(), jwks_refreshed: None };
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(p.name.clone(), cached);
        Ok(metadata)
    }

    /// Fetches the key set again (a key id was unknown: the provider may
    /// have rotated its keys); `None` when it was fetched too recently.
    fn refresh_keys(&self, p: &Provider, metadata: &CoreProviderMetadata) -> Result<Option<Arc<CoreProviderMetadata>>> {
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            let recent = cache.get(&p.name).and_then(|c| c.jwks_refreshed);
            if recent.is_some_and(|t| t.elapsed() < Duration::from_secs(JWKS_REFRESH_INTERVAL_MIN_S)) {
                return Ok(None);
            }
        }
        let http = |r| http_client::call(&self.agent, r);
        let jwks =
            JsonWebKeySet::fetch(metadata.jwks_uri(), &http).map_err(|e| provider_error("key set fetch failed", e))?;
        let fresh = Arc::new(metadata.clone().set_jwks(jwks));
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(
            p.name.clone(),
            Cached { metadata: Arc::clone(&fresh), fetched: Instant::now(), jwks_refreshed: Some(Instant::now()) },
        );
        Ok(Some(fresh))
    }

    fn client_id(p: &Provider) -> ClientId {
        ClientId::new(p.cfg.client_id.clone())
    }

    /// The crate's client for `p`: our credentials and callback, the
    /// provider's endpoints from its metadata.
    fn client(p: &Provider, metadata: &CoreProviderMetadata) -> DiscoveredClient {
        CoreClient::from_provider_metadata(metadata.clone(), Self::client_id(p), Some(p.secret.clone()))
            .set_redirect_uri(p.callback.clone())
    }

    /// `GET /v1/auth/oidc/{name}/start`: stores the pending sign-in and
    /// answers the provider's authorization URL.
    pub fn start(&self, db: &Db, name: &str, redirect_uri: &str, client_state: Option<&str>) -> Result<String> {
        let p = self.provider(name)?;
        if !p.cfg.redirect_uris.iter().any(|u| u.as_str() == redirect_uri) {
            return Err(refused(Refusal::RedirectUriNotAllowed));
        }
        if client_state.is_some_and(|s| s.len() > CLIENT_STATE_BYTES_MAX) {
            return Err(Error::invalid("state", format!("state must be at most {CLIENT_STATE_BYTES_MAX} bytes")));
        }
        let metadata = self.metadata(p)?;
        let state = token::hex(&token::random_bytes::<32>()?);
        let nonce = token::hex(&token::random_bytes::<32>()?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let client = Self::client(p, &metadata);
        let mut request = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            {
                let state = state.clone();
                move || CsrfToken::new(state)
            },
            {
                let nonce = nonce.clone();
                move || Nonce::new(nonce)
            },
        );
        for scope in p.cfg.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, _, _) = request.set_pkce_challenge(challenge).url();
        let pending = storage::Pending {
            provider: p.name.clone(),
            nonce,
            pkce_verifier: verifier.secret().clone(),
            redirect_uri: redirect_uri.to_owned(),
            client_state: client_state.map(str::to_owned),
        };
        let state_hash = token::hash(&state);
        db.write(move |c| {
            let now = Timestamp::now();
            storage::insert_login(c, &state_hash, &pending, now, now.plus_ms(OIDC_LOGIN_TTL_S * 1000))?;
            Ok::<_, Error>(())
        })?;
        Ok(url.to_string())
    }

    /// `GET /v1/auth/oidc/{name}/callback`. An unknown, used or expired
    /// `state` is an error answered here (there is nowhere safe to send the
    /// browser); every later failure goes back to the frontend as
    /// `?error=<code>&error_description=...`.
    pub fn callback(&self, db: &Db, auth_cfg: &AuthConfig, name: &str, query: &[(String, String)]) -> Result<Redirect> {
        let p = self.provider(name)?;
        let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let state = get("state").ok_or_else(|| refused(Refusal::InvalidOidcState))?;
        let state_hash = token::hash(state);
        let provider = p.name.clone();
        let pending = db
            .write(move |c| Ok::<_, Error>(storage::take_login(c, &state_hash, &provider, Timestamp::now())?))?
            .ok_or_else(|| refused(Refusal::InvalidOidcState))?;
        let back = |pairs: &[(&str, &str)]| -> Result<Redirect> {
            let mut url =
                url::Url::parse(&pending.redirect_uri).map_err(|e| Error::Internal(format!("redirect_uri: {e}")))?;
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in pairs {
                    q.append_pair(k, v);
                }
                if let Some(s) = &pending.client_state {
                    q.append_pair("state", s);
                }
            }
            Ok(Redirect(url.to_string()))
        };
        let outcome = match get("error") {
            Some(e) => Err(refused(Refusal::OidcProviderError(format!("the provider answered {e}")))),
            None => match get("code") {
                Some(code) => self.finish(db, auth_cfg, p, &pending, code),
                None => Err(refused(Refusal::OidcProviderError("the provider sent no code".into()))),
            },
        };
        match outcome {
            Ok(code) => back(&[("code", &code)]),
            Err(e) => {
                let view = e.client_view();
                logs::record(
                    db,
                    NewLog::system(
                        logs::Level::Info,
                        "oidc_sign_in_refused",
                        json!({ "provider": p.name, "code": view.code }),
                    ),
                );
                back(&[("error", view.code), ("error_description", &view.message)])
            }
        }
    }

    /// Exchanges the provider's code, verifies the ID token, links the user
    /// and issues our one-time code.
    fn finish(
        &self,
        db: &Db,
        auth_cfg: &AuthConfig,
        p: &Provider,
        pending: &storage::Pending,
        code: &str,
    ) -> Result<String> {
        let metadata = self.metadata(p)?;
        let client = Self::client(p, &metadata);
        let http = |r| http_client::call(&self.agent, r);
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| provider_error("no token endpoint", e))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request(&http)
            .map_err(|e| provider_error("the token endpoint refused the code", e))?;
        let id_token = response
            .id_token()
            .ok_or_else(|| refused(Refusal::OidcTokenInvalid("the provider sent no ID token".into())))?;
        let nonce = Nonce::new(pending.nonce.clone());
        let identity = match self.verify(p, &metadata, id_token, &nonce) {
            Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)) => {
                match self.refresh_keys(p, &metadata)? {
                    Some(fresh) => self.verify(p, &fresh, id_token, &nonce),
                    None => {
                        Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey))
                    }
                }
            }
            other => other,
        }
        .map_err(|e| refused(Refusal::OidcTokenInvalid(e.to_string())))?;
        let (provider, issuer, cfg) = (p.name.clone(), p.cfg.issuer.clone(), p.cfg.clone());
        let auth_cfg = auth_cfg.clone();
        let (code, hash) = token::opaque_token(OIDC_CODE_PREFIX)?;
        db.write(move |c| {
            let user = link_or_create(c, &auth_cfg, &cfg, &provider, issuer.as_str(), &identity)?;
            let now = Timestamp::now();
            storage::insert_code(c, &hash, user, &provider, now, now.plus_ms(OIDC_CODE_TTL_S * 1000))?;
            Ok::<_, Error>(())
        })?;
        Ok(code)
    }

    fn verify(
        &self,
        p: &Provider,
        metadata: &CoreProviderMetadata,
        id_token: &CoreIdToken,
        nonce: &Nonce,
    ) -> std::result::Result<Identity, ClaimsVerificationError> {
        let verifier = CoreIdTokenVerifier::new_confidential_client(
            Self::client_id(p),
            p.secret.clone(),
            p.issuer.clone(),
            metadata.jwks().clone(),
        )
        .set_allowed_algs([CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256, CoreJwsSigningAlgorithm::EcdsaP256Sha256]);
        let claims = id_token.claims(&verifier, nonce)?;
        Ok(Identity {
            subject: claims.subject().to_string(),
            email: claims.email().map(|e| e.to_string()),
            email_verified: claims.email_verified() == Some(true),
        })
    }
}

/// The user for a verified identity: the one linked to (issuer, subject);
/// else the active account with the same verified e-mail, now linked, when
/// [`may_link_by_email`] allows it; else a new account when signup is
/// enabled. Every link is a business log and a `user.identity_linked` event.
fn link_or_create(
    conn: &Conn<'_>,
    auth_cfg: &AuthConfig,
    cfg: &OidcConfig,
    provider: &str,
    issuer: &str,
    id: &Identity,
) -> Result<UserId> {
    let email = id.email.as_deref().map(Email::parse).transpose().ok().flatten();
    if !cfg.allowed_domains.is_empty() {
        let domain = email.as_ref().and_then(|e| e.as_str().rsplit_once('@').map(|(_, d)| d.to_owned()));
        if !domain.is_some_and(|d| cfg.allowed_domains.iter().any(|a| a.eq_ignore_ascii_case(&d))) {
            return Err(refused(Refusal::OidcDomainNotAllowed));
        }
        if !id.email_verified {
            return Err(refused(Refusal::OidcEmailUnverified));
        }
    }
    if let Some(user) = storage::linked_user(conn, issuer, &id.subject)? {
        users::storage::get_active(conn, user)?
            .ok_or_else(|| Error::Forbidden("This account has been deactivated; ask an administrator.".into()))?;
        return Ok(user);
    }
    let (Some(email), true) = (email, id.email_verified) else {
        return Err(refused(Refusal::OidcEmailUnverified));
    };
    let now = Timestamp::now();
    let (user, existing) = match users::storage::by_email(conn, &email)? {
        Some((user, _)) => {
            may_link_by_email(conn, cfg, &user)?;
            (user.id, true)
        }
        None if auth_cfg.signup_enabled => {
            (users::sign_up(conn, &email, auth::password::NO_PASSWORD, auth_cfg)?.id, false)
        }
        None => return Err(refused(Refusal::SignupDisabled)),
    };
    storage::link(conn, issuer, &id.subject, user, Some(email.as_str()), now)?;
    let linked = json!({ "user_id": user, "provider": provider, "existing_account": existing });
    logs::write(conn, &NewLog::business(user, "oidc_linked", true, linked.clone()))?;
    events::emit(conn, EventType::IdentityLinked, Some(user), &linked)?;
    Ok(user)
}

/// Whether an existing account may be linked to a new identity because the
/// provider asserts its e-mail. An identity provider that lets its users
/// claim an address would otherwise hand out any account with that address:
/// so only where the operator opted in (`link_existing_by_email`), never an
/// administrator, and never an account that already signs in through
/// another identity (its owner chose that one).
fn may_link_by_email(conn: &Conn<'_>, cfg: &OidcConfig, user: &users::User) -> Result<()> {
    if !cfg.link_existing_by_email || user.role == crate::domain::Role::Admin || storage::has_identity(conn, user.id)? {
        return Err(refused(Refusal::OidcAccountExists));
    }
    Ok(())
}

/// `POST /v1/auth/oidc/exchange`: the one-time code for a session's tokens.
pub fn exchange(
    db: &Db,
    keys: &auth::jwt::JwtKeys,
    cache: &auth::cache::CredentialCache,
    cfg: &AuthConfig,
    code: &str,
) -> Result<auth::LoginResponse> {
    let hash = token::hash(code);
    let (user, provider) = db.write(move |c| {
        let (user, provider) =
            storage::take_code(c, &hash, Timestamp::now())?.ok_or_else(|| refused(Refusal::InvalidOidcCode))?;
        let user = users::storage::get_active(c, user)?.ok_or_else(|| refused(Refusal::InvalidOidcCode))?;
        Ok::<_, Error>((user, provider))
    })?;
    auth::sign_in(db, keys, cache, cfg, user, format!("oidc:{provider}"), "login")
}

/// Deletes finished sign-ins and codes.
pub fn prune(conn: &Conn<'_>) -> Result<usize> {
    Ok(storage::prune(conn, Timestamp::now())?)
}
