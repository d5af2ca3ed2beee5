//! The wabill metric names that the alert rules (`deploy/prometheus/rules.yml`) and the
//! Grafana dashboard (`deploy/grafana/wabill.json`) query, so tests can check them against
//! the README's metrics table and against a live `/metrics` page.
//!
//! Use it from a test crate with
//! `#[path = "support/metric_names.rs"] mod metric_names;`.

use std::collections::BTreeSet;
use std::path::Path;

/// Every `wabill_*` metric name used by a rule expression or a dashboard query (panel
/// targets and template variables), with the histogram series suffixes (`_bucket`, `_sum`,
/// `_count`) removed: the names as the binary registers them.
pub fn referenced_metric_names(repo_root: &Path) -> BTreeSet<String> {
    let mut exprs = Vec::new();

    let rules_path = repo_root.join("deploy/prometheus/rules.yml");
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&read(&rules_path)).unwrap_or_else(|e| panic!("{}: not YAML: {e}", rules_path.display()));
    let groups = rules["groups"]
        .as_sequence()
        .unwrap_or_else(|| panic!("{}: no groups", rules_path.display()));
    for group in groups {
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            let expr = rule["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: a rule without expr: {rule:?}", rules_path.display()));
            exprs.push(expr.to_string());
        }
    }

    let dashboard_path = repo_root.join("deploy/grafana/wabill.json");
    let dashboard: serde_json::Value = serde_json::from_str(&read(&dashboard_path))
        .unwrap_or_else(|e| panic!("{}: not JSON: {e}", dashboard_path.display()));
    collect_queries(&dashboard, &mut exprs);

    let mut names = BTreeSet::new();
    for expr in &exprs {
        for ident in identifiers(expr) {
            if !ident.starts_with("wabill_") {
                continue;
            }
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| ident.strip_suffix(suffix))
                .unwrap_or(&ident);
            names.insert(base.to_string());
        }
    }
    names
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// PromQL in a Grafana dashboard: `expr` of panel targets, `definition` and `query` of
/// template variables (`query` is a string or an object with a `query` field).
fn collect_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_queries(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| collect_queries(item, out)),
        _ => {}
    }
}

/// PromQL identifiers (metric, label and function names, keywords), skipping string
/// literals so that label values such as `job="wabill_x"` are not taken for metrics.
fn identifiers(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let mut escaped = false;
                for d in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if d == '\\' && c != '`' {
                        escaped = true;
                    } else if d == c {
                        break;
                    }
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let mut ident = String::from(c);
                while let Some(&d) = chars.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' || d == ':' {
                        ident.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(ident);
            }
            c if c.is_ascii_digit() => {
                // A number or a duration (`1e3`, `15m`): not an identifier.
                while chars.peek().is_some_and(|d| d.is_ascii_alphanumeric() || *d == '.') {
                    chars.next();
                }
            }
            _ => {}
        }
    }
    out
}
