//! The map holds itself true: every `crate::` path in `src/` (test modules
//! aside) points down the tiers ARCHITECTURE.md lists, and no two top-level
//! modules import each other, directly or around a circle.
//!
//! Run alone: `cargo test --test api architecture`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The tiers, bottom up. A module may import its own tier and those below;
/// within a tier, imports must not form a circle.
const TIERS: &[(&str, &[&str])] = &[
    ("floor", &["support", "domain", "error", "config", "metrics", "paging"]),
    ("storage", &["storage"]),
    ("records", &["logs", "events", "usage"]),
    (
        "services",
        &["users", "ledger", "auth", "guard", "codes", "idempotency", "providers", "media", "oidc", "payments"],
    ),
    ("service handles", &["app"]),
    ("metered work", &["metered", "jobs"]),
    ("http", &["http"]),
    ("entry points", &["service", "cli", "ops", "migrate_pg"]),
];

fn tier_of(module: &str) -> Option<usize> {
    TIERS.iter().position(|(_, modules)| modules.contains(&module))
}

/// Every `.rs` file below `dir`.
pub(crate) fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its test module (`#[cfg(test)] mod tests {`
/// to the end) and without comments; test-only files (`tests.rs`) are none.
fn code_of(path: &Path, text: &str) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let mut code = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") && lines.peek().is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// The top-level modules a piece of code names through `crate::`, including
/// inside `use crate::{a, b::c}` groups.
fn imports(code: &str) -> BTreeSet<String> {
    let head =
        |s: &str| -> String { s.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect() };
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            found.insert(head(rest));
            continue;
        };
        // Each item at the group's top level is `name` or `name::...`.
        let mut depth = 0;
        let mut item = String::new();
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    found.insert(head(&item));
                    item.clear();
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        found.insert(head(&item));
    }
    found.retain(|m| !m.is_empty() && m != "self");
    found
}

/// Which top-level module imports which, with one file as the witness.
fn import_graph() -> BTreeMap<String, BTreeMap<String, String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).expect("under src");
        let top =
            rel.components().next().expect("a path").as_os_str().to_string_lossy().trim_end_matches(".rs").to_owned();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read a source file");
        for target in imports(&code_of(&f, &text)) {
            if target != top {
                graph.entry(top.clone()).or_default().entry(target).or_insert_with(|| rel.display().to_string());
            }
        }
    }
    graph
}

#[test]
fn every_top_level_module_has_a_tier() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&src).expect("read src").flatten() {
        let name = entry.file_name().to_string_lossy().trim_end_matches(".rs").to_owned();
        if name != "lib" && name != "main" && tier_of(&name).is_none() {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "add these to TIERS (and ARCHITECTURE.md): {missing:?}");
}

#[test]
fn no_module_imports_a_higher_tier() {
    let mut against = Vec::new();
    for (from, targets) in import_graph() {
        let Some(low) = tier_of(&from) else { continue };
        for (to, witness) in targets {
            if let Some(high) = tier_of(&to)
                && high > low
            {
                against.push(format!("{from} ({}) imports {to} ({}) in {witness}", TIERS[low].0, TIERS[high].0));
            }
        }
    }
    assert!(against.is_empty(), "imports against the tiers:\n{}", against.join("\n"));
}

/// Strongly connected components of the graph (Tarjan): a component of more
/// than one module is a circle of imports.
fn circles(graph: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<Vec<String>> {
    struct Walk<'g> {
        graph: &'g BTreeMap<String, BTreeMap<String, String>>,
        index: BTreeMap<&'g str, (usize, usize)>,
        stack: Vec<&'g str>,
        out: Vec<Vec<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, v: &'g str) {
            let i = self.index.len();
            self.index.insert(v, (i, i));
            self.stack.push(v);
            for w in self.graph.get(v).into_iter().flat_map(|t| t.keys()) {
                let w = w.as_str();
                match self.index.get(w).copied() {
                    None => {
                        self.visit(w);
                        let low = self.index[w].1.min(self.index[v].1);
                        self.index.entry(v).and_modify(|e| e.1 = low);
                    }
                    Some((wi, _)) if self.stack.contains(&w) => {
                        let low = wi.min(self.index[v].1);
                        self.index.entry(v).and_modify(|e| e.1 = low);
                    }
                    Some(_) => {}
                }
            }
            let (vi, low) = self.index[v];
            if vi == low {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    component.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.out.push(component);
                }
            }
        }
    }
    let mut walk = Walk { graph, index: BTreeMap::new(), stack: Vec::new(), out: Vec::new() };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.out
}

#[test]
fn no_two_top_level_modules_import_each_other_around_a_circle() {
    let graph = import_graph();
    let graph = &graph;
    let found: Vec<String> = circles(graph)
        .into_iter()
        .map(|c| {
            let witnesses: Vec<String> = c
                .iter()
                // The edges to cut: those that do not point down the tiers.
                .flat_map(|a| c.iter().filter_map(move |b| graph[a].get(b).map(|w| (a, b, w))))
                .filter(|(a, b, _)| tier_of(b) >= tier_of(a))
                .map(|(a, b, w)| format!("{a} -> {b} ({w})"))
                .collect();
            format!("{}: {}", c.join(", "), witnesses.join("; "))
        })
        .collect();
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn the_scanner_sees_grouped_and_nested_imports() {
    let code = "use crate::{auth::{self, api_key}, domain::Email, error};\nlet x = crate::ledger::hold(c);";
    let found: Vec<String> = imports(code).into_iter().collect();
    assert_eq!(found, ["auth", "domain", "error", "ledger"]);
}
