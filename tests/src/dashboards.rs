//! The Grafana dashboards of `compose/grafana/dashboards/`: loading them with the checks Grafana
//! provisioning needs (title, uid, panels whose queries name the `prometheus` datasource), and
//! reading the metric names out of their PromQL expressions, so that tests can hold them against
//! what the services really expose.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The uid of the provisioned Prometheus datasource every panel must use.
pub const DATASOURCE_UID: &str = "prometheus";

/// `compose/grafana/dashboards/` of this repository.
pub fn dir() -> PathBuf {
    crate::procs::repo_root().join("compose/grafana/dashboards")
}

/// One dashboard file, checked.
#[derive(Debug, Clone)]
pub struct Dashboard {
    pub file: PathBuf,
    pub uid: String,
    pub title: String,
    pub panels: Vec<Panel>,
}

/// A panel that queries (rows are left out).
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    /// The PromQL expressions of its targets, as written (Grafana variables included).
    pub exprs: Vec<String>,
}

impl Dashboard {
    /// Every `(panel title, expression)` of the dashboard.
    pub fn exprs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.panels.iter().flat_map(|panel| {
            panel
                .exprs
                .iter()
                .map(move |expr| (panel.title.as_str(), expr.as_str()))
        })
    }
}

/// Loads and checks every `*.json` of [`dir`] (at least one); uids must be distinct.
pub fn load_all() -> anyhow::Result<Vec<Dashboard>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|path| path.extension().is_some_and(|ext| ext == "json"));
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no dashboard in {}", dir().display());
    let dashboards = files
        .iter()
        .map(|file| load(file))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut uids = HashSet::new();
    for dashboard in &dashboards {
        anyhow::ensure!(
            uids.insert(dashboard.uid.as_str()),
            "{}: uid {:?} is used by another dashboard",
            dashboard.file.display(),
            dashboard.uid
        );
    }
    Ok(dashboards)
}

/// Loads one dashboard file and checks it.
pub fn load(file: &Path) -> anyhow::Result<Dashboard> {
    let text = std::fs::read_to_string(file)?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", file.display()))?;
    let mut dashboard = parse(&json).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    dashboard.file = file.to_path_buf();
    Ok(dashboard)
}

/// The checks of a dashboard model that do not need its file.
pub fn check(json: &Value) -> anyhow::Result<()> {
    parse(json).map(|_| ())
}

fn string<'a>(value: &'a Value, key: &str, what: &str) -> anyhow::Result<&'a str> {
    match value.get(key).and_then(Value::as_str) {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => anyhow::bail!("{what}: `{key}` must be a non-empty string"),
    }
}

fn parse(json: &Value) -> anyhow::Result<Dashboard> {
    let title = string(json, "title", "dashboard")?.to_owned();
    let uid = string(json, "uid", "dashboard")?.to_owned();
    anyhow::ensure!(
        uid.len() <= 40
            && uid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "dashboard uid {uid:?}: at most 40 characters of [A-Za-z0-9_-]"
    );
    anyhow::ensure!(
        json.get("schemaVersion").and_then(Value::as_u64).is_some(),
        "dashboard: `schemaVersion` must be a number"
    );
    let raw_panels = json
        .get("panels")
        .and_then(Value::as_array)
        .filter(|panels| !panels.is_empty())
        .ok_or_else(|| anyhow::anyhow!("dashboard: `panels` must be a non-empty array"))?;
    let mut ids = HashSet::new();
    let mut panels = Vec::new();
    for (index, panel) in raw_panels.iter().enumerate() {
        let what = format!("panel #{index}");
        let id = panel
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow::anyhow!("{what}: `id` must be a number"))?;
        anyhow::ensure!(ids.insert(id), "{what}: id {id} is used twice");
        let panel_title = string(panel, "title", &what)?;
        let what = format!("panel {panel_title:?}");
        let kind = string(panel, "type", &what)?;
        check_grid_pos(panel, &what)?;
        if kind == "row" {
            continue;
        }
        check_datasource(panel.get("datasource"), &what)?;
        let targets = panel
            .get("targets")
            .and_then(Value::as_array)
            .filter(|targets| !targets.is_empty())
            .ok_or_else(|| anyhow::anyhow!("{what}: `targets` must be a non-empty array"))?;
        let mut exprs = Vec::new();
        let mut ref_ids = HashSet::new();
        for target in targets {
            let ref_id = string(target, "refId", &what)?;
            anyhow::ensure!(ref_ids.insert(ref_id), "{what}: refId {ref_id} twice");
            let what = format!("{what} target {ref_id}");
            check_datasource(target.get("datasource"), &what)?;
            exprs.push(string(target, "expr", &what)?.to_owned());
        }
        panels.push(Panel {
            title: panel_title.to_owned(),
            exprs,
        });
    }
    anyhow::ensure!(!panels.is_empty(), "dashboard: no panel with queries");
    Ok(Dashboard {
        file: PathBuf::new(),
        uid,
        title,
        panels,
    })
}

fn check_datasource(datasource: Option<&Value>, what: &str) -> anyhow::Result<()> {
    let uid = datasource
        .and_then(|d| d.get("uid"))
        .and_then(Value::as_str);
    anyhow::ensure!(
        uid == Some(DATASOURCE_UID),
        "{what}: datasource uid must be {DATASOURCE_UID:?}, found {datasource:?}"
    );
    Ok(())
}

fn check_grid_pos(panel: &Value, what: &str) -> anyhow::Result<()> {
    let number = |key: &str| {
        panel
            .get("gridPos")
            .and_then(|g| g.get(key))
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow::anyhow!("{what}: `gridPos.{key}` must be a number"))
    };
    let (x, w, h) = (number("x")?, number("w")?, number("h")?);
    number("y")?;
    anyhow::ensure!(
        w > 0 && h > 0 && x + w <= 24,
        "{what}: gridPos must fit the 24 columns"
    );
    Ok(())
}

/// `expr` with Grafana's interval variables replaced by fixed durations, as Grafana would
/// before sending it to Prometheus (`$__rate_interval` and `$__interval` → `1m`, `$__range` →
/// `1h`). Other variables are left as they are.
pub fn with_grafana_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("${__rate_interval}", "1m")
        .replace("$__interval", "1m")
        .replace("${__interval}", "1m")
        .replace("$__range", "1h")
        .replace("${__range}", "1h")
}

/// Keywords followed by a parenthesised list of label names, not metrics.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Aggregation operators (which may be followed by `by (…)` before their parenthesis), binary
/// keywords and literals: never metric names.
const OTHER_KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
];

/// The metric names a PromQL expression selects, in order of first appearance. Function names
/// (an identifier before `(`), keywords, label names in `{…}` and `by (…)`, strings, numbers,
/// durations in `[…]` and Grafana variables (`$…`) are not metric names. Fails on unbalanced
/// brackets or an unterminated string.
pub fn metric_names(expr: &str) -> anyhow::Result<Vec<String>> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&chars, i)?,
            '{' => i = skip_group(&chars, i, '{', '}')?,
            '[' => i = skip_group(&chars, i, '[', ']')?,
            '$' => {
                i += 1;
                if chars.get(i) == Some(&'{') {
                    i = skip_group(&chars, i, '{', '}')?;
                } else {
                    while i < chars.len() && is_ident_char(chars[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
                let ident: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let before_paren = chars.get(next) == Some(&'(');
                if LABEL_LIST_KEYWORDS.contains(&ident.as_str()) {
                    if before_paren {
                        i = skip_group(&chars, next, '(', ')')?;
                    }
                } else if OTHER_KEYWORDS.contains(&ident.to_ascii_lowercase().as_str())
                    || before_paren
                {
                    // An operator, a literal or a function.
                } else if seen.insert(ident.clone()) {
                    names.push(ident);
                }
            }
            '}' | ']' => anyhow::bail!("unbalanced {c:?} at {i} in {expr:?}"),
            _ => i += 1,
        }
    }
    check_parentheses(expr)?;
    Ok(names)
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The index after the string that starts at `start`.
fn skip_string(chars: &[char], start: usize) -> anyhow::Result<usize> {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return Ok(i + 1),
            _ => i += 1,
        }
    }
    anyhow::bail!("unterminated string starting at {start}")
}

/// The index after the group that opens at `start` (nested groups and strings inside).
fn skip_group(chars: &[char], start: usize, open: char, close: char) -> anyhow::Result<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(chars, i)?;
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    anyhow::bail!("{open:?} at {start} is never closed")
}

/// Round parentheses balance (outside strings).
fn check_parentheses(expr: &str) -> anyhow::Result<()> {
    let chars: Vec<char> = expr.chars().collect();
    let mut depth = 0i64;
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(&chars, i)?;
                continue;
            }
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                anyhow::ensure!(depth >= 0, "unbalanced ')' at {i} in {expr:?}");
            }
            _ => {}
        }
        i += 1;
    }
    anyhow::ensure!(depth == 0, "unclosed '(' in {expr:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr).unwrap()
    }

    #[test]
    fn metric_names_skip_functions_keywords_labels_and_durations() {
        assert_eq!(
            names(
                "histogram_quantile(0.95, sum by (le, route) (rate(cognition_request_duration_seconds_bucket{route!=\"a{b}\"}[$__rate_interval])))"
            ),
            ["cognition_request_duration_seconds_bucket"]
        );
        assert_eq!(
            names(
                "sum by (grpc_method) (grpc_server_started_total{grpc_service=\"x\"}) - sum without (instance) (grpc_server_handled_total) offset 5m"
            ),
            ["grpc_server_started_total", "grpc_server_handled_total"]
        );
        assert_eq!(
            names("sum(rate(a_total[1m])) * 3600 / 1e6 > bool 0.5 and on (job) b unless c"),
            ["a_total", "b", "c"]
        );
        assert_eq!(names("sum(cognition_sandboxes)"), ["cognition_sandboxes"]);
        assert_eq!(names("up == 1 or up"), ["up"]);
        assert_eq!(
            names("x / on (a) group_left (b) y{l='q'}"),
            ["x", "y"],
            "label lists after group_left"
        );
        assert_eq!(names("vector(1) + time()"), Vec::<String>::new());
    }

    #[test]
    fn metric_names_reject_unbalanced_expressions() {
        assert!(metric_names("sum(rate(x[1m])").is_err());
        assert!(metric_names("x{a=\"b}").is_err());
        assert!(metric_names("rate(x[1m]))").is_err());
    }

    #[test]
    fn grafana_variables_become_durations() {
        assert_eq!(
            with_grafana_variables("rate(x[$__rate_interval]) + increase(y[$__range])"),
            "rate(x[1m]) + increase(y[1h])"
        );
    }

    fn minimal() -> Value {
        json!({
            "title": "T", "uid": "t-1", "schemaVersion": 39,
            "panels": [
                {"id": 1, "type": "row", "title": "R", "gridPos": {"x": 0, "y": 0, "w": 24, "h": 1}},
                {"id": 2, "type": "timeseries", "title": "P",
                 "gridPos": {"x": 0, "y": 1, "w": 12, "h": 8},
                 "datasource": {"type": "prometheus", "uid": "prometheus"},
                 "targets": [{"refId": "A", "expr": "up",
                              "datasource": {"type": "prometheus", "uid": "prometheus"}}]}
            ]
        })
    }

    #[test]
    fn a_minimal_dashboard_passes() {
        check(&minimal()).unwrap();
    }

    #[test]
    fn missing_or_wrong_fields_are_named() {
        type Breaks = fn(&mut Value);
        let cases: [(&str, Breaks); 7] = [
            ("`title`", |d| d["title"] = json!("")),
            ("`uid`", |d| {
                d.as_object_mut().unwrap().remove("uid");
            }),
            ("`targets`", |d| d["panels"][1]["targets"] = json!([])),
            ("datasource uid", |d| {
                d["panels"][1]["datasource"]["uid"] = json!("other")
            }),
            ("target A: datasource uid", |d| {
                d["panels"][1]["targets"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("datasource");
            }),
            ("`expr`", |d| {
                d["panels"][1]["targets"][0]["expr"] = json!(" ")
            }),
            ("24 columns", |d| d["panels"][1]["gridPos"]["x"] = json!(20)),
        ];
        for (expected, break_it) in cases {
            let mut dashboard = minimal();
            break_it(&mut dashboard);
            let err = check(&dashboard).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected:?} not in {err:?}");
        }
    }
}
