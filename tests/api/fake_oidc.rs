//! A fake OpenID Connect provider: a real HTTP server on 127.0.0.1 serving
//! discovery, a key set, an authorization endpoint (which signs the user in
//! at once and redirects back with a code) and a token endpoint (client
//! secret over Basic auth, PKCE S256 checked) that answers ID tokens signed
//! RS256 with a test key. The script makes it misbehave on purpose.

#![allow(dead_code)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub const CLIENT_ID: &str = "tollgate-test";
pub const CLIENT_SECRET: &str = "oidc-client-secret";

const KEY_1: &str = include_str!("fixtures/oidc_rsa_1.pem");
const KEY_1_N: &str = include_str!("fixtures/oidc_rsa_1.n");
const KEY_2: &str = include_str!("fixtures/oidc_rsa_2.pem");
const KEY_2_N: &str = include_str!("fixtures/oidc_rsa_2.n");

#[derive(Debug, Clone)]
pub struct Script {
    pub subject: String,
    pub email: String,
    pub email_verified: bool,
    /// The ID token carries another nonce than the one asked for.
    pub wrong_nonce: bool,
    /// The ID token is for another client.
    pub wrong_aud: bool,
    /// The ID token expired an hour ago.
    pub expired: bool,
    /// Sign with key 2; `publish_key_2` says whether the key set shows it.
    pub sign_with_key_2: bool,
    pub publish_key_2: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            subject: "subject-1".into(),
            email: "oidc-user@example.com".into(),
            email_verified: true,
            wrong_nonce: false,
            wrong_aud: false,
            expired: false,
            sign_with_key_2: false,
            publish_key_2: false,
        }
    }
}

struct Grant {
    nonce: String,
    challenge: String,
    redirect_uri: String,
}

pub struct FakeOidc {
    pub base: String,
    pub script: Arc<Mutex<Script>>,
    pub jwks_fetches: Arc<AtomicUsize>,
    pub token_calls: Arc<AtomicUsize>,
    server: Arc<tiny_http::Server>,
}

impl Drop for FakeOidc {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

fn jwk(kid: &str, n: &str) -> Value {
    json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n.trim(), "e": "AQAB"})
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

impl FakeOidc {
    pub fn start() -> FakeOidc {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("fake oidc listens"));
        let base = format!("http://{}", server.server_addr().to_ip().unwrap());
        let script = Arc::new(Mutex::new(Script::default()));
        let (jwks_fetches, token_calls) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let grants: Arc<Mutex<HashMap<String, Grant>>> = Arc::default();
        {
            let (server, base, script) = (Arc::clone(&server), base.clone(), Arc::clone(&script));
            let (jwks_fetches, token_calls) = (Arc::clone(&jwks_fetches), Arc::clone(&token_calls));
            std::thread::spawn(move || {
                for mut rq in server.incoming_requests() {
                    let url = rq.url().to_owned();
                    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
                    let params: HashMap<String, String> =
                        form_urlencoded::parse(query.as_bytes()).into_owned().collect();
                    let s = script.lock().unwrap().clone();
                    let json_response = |v: Value, status: u16| {
                        tiny_http::Response::from_string(v.to_string())
                            .with_status_code(status)
                            .with_header(tiny_http::Header::from_bytes("Content-Type", "application/json").unwrap())
                    };
                    let response = match path {
                        "/.well-known/openid-configuration" => json_response(
                            json!({
                                "issuer": base,
                                "authorization_endpoint": format!("{base}/authorize"),
                                "token_endpoint": format!("{base}/token"),
                                "jwks_uri": format!("{base}/jwks"),
                                "response_types_supported": ["code"],
                                "subject_types_supported": ["public"],
                                "id_token_signing_alg_values_supported": ["RS256"],
                            }),
                            200,
                        ),
                        "/jwks" => {
                            jwks_fetches.fetch_add(1, Ordering::SeqCst);
                            let mut keys = vec![jwk("key-1", KEY_1_N)];
                            if s.publish_key_2 {
                                keys.push(jwk("key-2", KEY_2_N));
                            }
                            json_response(json!({ "keys": keys }), 200)
                        }
                        "/authorize" => {
                            // The user signs in at once: back with a code.
                            let code = format!("code-{}", grants.lock().unwrap().len() + 1);
                            let grant = Grant {
                                nonce: params.get("nonce").cloned().unwrap_or_default(),
                                challenge: params.get("code_challenge").cloned().unwrap_or_default(),
                                redirect_uri: params.get("redirect_uri").cloned().unwrap_or_default(),
                            };
                            let ok = params.get("code_challenge_method").map(String::as_str) == Some("S256")
                                && params.get("client_id").map(String::as_str) == Some(CLIENT_ID);
                            let mut back = url::Url::parse(&grant.redirect_uri).expect("redirect_uri");
                            if ok {
                                back.query_pairs_mut().append_pair("code", &code);
                            } else {
                                back.query_pairs_mut().append_pair("error", "invalid_request");
                            }
                            back.query_pairs_mut().append_pair("state", params.get("state").map_or("", String::as_str));
                            grants.lock().unwrap().insert(code, grant);
                            tiny_http::Response::from_string("")
                                .with_status_code(302)
                                .with_header(tiny_http::Header::from_bytes("Location", back.as_str()).unwrap())
                        }
                        "/token" => {
                            token_calls.fetch_add(1, Ordering::SeqCst);
                            let mut body = String::new();
                            let _ = std::io::Read::read_to_string(rq.as_reader(), &mut body);
                            let form: HashMap<String, String> =
                                form_urlencoded::parse(body.as_bytes()).into_owned().collect();
                            let basic = format!(
                                "Basic {}",
                                base64::engine::general_purpose::STANDARD
                                    .encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
                            );
                            let authorized = rq
                                .headers()
                                .iter()
                                .any(|h| h.field.equiv("Authorization") && h.value.as_str() == basic);
                            let grant = form.get("code").and_then(|c| grants.lock().unwrap().remove(c));
                            match grant {
                                _ if !authorized => json_response(json!({"error": "invalid_client"}), 401),
                                None => json_response(json!({"error": "invalid_grant"}), 400),
                                Some(g) => {
                                    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
                                    let pkce_ok =
                                        URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == g.challenge;
                                    if !pkce_ok || form.get("redirect_uri") != Some(&g.redirect_uri) {
                                        json_response(json!({"error": "invalid_grant"}), 400)
                                    } else {
                                        let id_token = id_token(&base, &s, &g.nonce);
                                        json_response(
                                            json!({"access_token": "provider-access", "token_type": "Bearer", "expires_in": 3600, "id_token": id_token}),
                                            200,
                                        )
                                    }
                                }
                            }
                        }
                        _ => json_response(json!({"error": "not_found"}), 404),
                    };
                    let _ = rq.respond(response);
                }
            });
        }
        FakeOidc { base, script, jwks_fetches, token_calls, server }
    }

    pub fn set(&self, f: impl FnOnce(&mut Script)) {
        f(&mut self.script.lock().unwrap());
    }
}

fn id_token(issuer: &str, s: &Script, nonce: &str) -> String {
    let now = now_s();
    let claims = json!({
        "iss": issuer,
        "sub": s.subject,
        "aud": if s.wrong_aud { "someone-else" } else { CLIENT_ID },
        "iat": now,
        "exp": if s.expired { now - 3600 } else { now + 300 },
        "nonce": if s.wrong_nonce { "not-the-nonce" } else { nonce },
        "email": s.email,
        "email_verified": s.email_verified,
    });
    let (pem, kid) = if s.sign_with_key_2 { (KEY_2, "key-2") } else { (KEY_1, "key-1") };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.into());
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).expect("test key");
    jsonwebtoken::encode(&header, &claims, &key).expect("sign")
}
