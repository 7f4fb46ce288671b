//! The repository's API reference (docs/API.md) stays true: it lists every
//! route the binary serves and every error code the code can produce.

use crate::architecture::rust_files;
use crate::helpers::*;
use std::path::Path;

fn reference() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/API.md")).expect("docs/API.md")
}

/// The string literal after `marker` (skipping a status number and a comma
/// first, as in `Rejection::new(404, "not_found", ...)`).
fn codes_after(text: &str, marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices(marker) {
        let rest =
            text[at + marker.len()..].trim_start_matches(|c: char| c.is_ascii_digit() || c == ',' || c.is_whitespace());
        if let Some(quoted) = rest.strip_prefix('"')
            && let Some(end) = quoted.find('"')
        {
            let code = &quoted[..end];
            if !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                found.push(code.to_owned());
            }
        }
    }
    found
}

#[test]
fn the_api_reference_lists_every_route_the_binary_serves() {
    let app = TestApp::spawn();
    let doc = app.client.request("GET", "/openapi.json", None, &[], None).unwrap().json();
    let reference = reference();
    let mut missing = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let entry = format!("`{} {path}`", method.to_ascii_uppercase());
            if !reference.contains(&entry) {
                missing.push(entry);
            }
        }
    }
    assert!(missing.is_empty(), "docs/API.md lacks {missing:?}");
}

/// Which credential each route takes is what the route table enforces: the
/// reference's `who` column says `session` exactly for the routes an API
/// key may not call (besides admin routes and the public ones).
#[test]
fn the_api_reference_says_which_routes_take_a_session_only() {
    use tollgate::http::route::Access;
    use tollgate::http::router::routes;
    let reference = reference();
    let mut wrong = Vec::new();
    for r in routes() {
        let row = format!("| `{} {}` | ", r.method, r.path);
        let Some(at) = reference.find(&row) else { continue };
        let who = reference[at + row.len()..].split(" |").next().unwrap_or("");
        let says_session = who.starts_with("session");
        if says_session != (r.access == Access::Session) {
            wrong.push(format!("{} {} is {:?} but documented as {who:?}", r.method, r.path, r.access));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn the_api_reference_lists_every_error_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("vendor/tiny_http/src"), &mut files);
    let reference = reference();
    let mut codes = std::collections::BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for marker in
            ["ApiError::refuse(", "ClientView::new(", "Rejection::new(", "code: \"", "unavailable(\"", "refusal("]
        {
            let marker = marker.trim_end_matches('"');
            codes.extend(codes_after(&text, marker));
        }
    }
    assert!(codes.len() > 30, "the scan found too few codes: {codes:?}");
    let missing: Vec<_> = codes.iter().filter(|c| !reference.contains(&format!("`{c}`"))).collect();
    assert!(missing.is_empty(), "docs/API.md lacks the codes {missing:?}");
}
