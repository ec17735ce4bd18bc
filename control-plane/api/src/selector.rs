//! Label and field selectors in Kubernetes' string syntax: `app=web,tier!=db`, `env in (a,b)`,
//! `env notin (c)`, `gpu`, `!gpu`; fields: `spec.nodeName=n1,status.phase!=Running`.
//! Parsed once, matched against objects as JSON.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::object;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

/// Splits on commas outside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&s[start..]);
    terms
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name of up to 63 characters of
/// alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 {
                return Err(format!(
                    "invalid label key {key:?}: prefix must be a DNS subdomain"
                ));
            }
            name
        }
        None => key,
    };
    check_label_value(name).map_err(|e| format!("invalid label key {key:?}: {e}"))?;
    if name.is_empty() {
        return Err(format!(
            "invalid label key {key:?}: name part must be non-empty"
        ));
    }
    Ok(())
}

/// A label value: empty, or up to 63 alphanumerics, `-`, `_`, `.`, starting and ending
/// alphanumeric.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    let ok_chars = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ok_ends = value.is_empty()
        || (value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()));
    if !ok_chars || !ok_ends {
        return Err(
            "must consist of alphanumeric characters, '-', '_' or '.', and must start and end \
             with an alphanumeric character"
                .into(),
        );
    }
    Ok(())
}

fn parse_set(term: &str, rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("{term:?}: expected a parenthesised list of values"))?;
    let values: Vec<String> = inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() {
        return Err(format!("{term:?}: the set of values must not be empty"));
    }
    for v in &values {
        check_label_value(v).map_err(|e| format!("{term:?}: invalid value {v:?}: {e}"))?;
    }
    Ok(values)
}

fn parse_term(term: &str) -> Result<Requirement, String> {
    let t = term.trim();
    if let Some(key) = t.strip_prefix('!') {
        let key = key.trim();
        check_label_key(key)?;
        return Ok(Requirement::DoesNotExist(key.to_string()));
    }
    for (op, negate) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((k, v)) = t.split_once(op) {
            let (k, v) = (k.trim(), v.trim());
            check_label_key(k)?;
            check_label_value(v).map_err(|e| format!("{t:?}: invalid value {v:?}: {e}"))?;
            return Ok(if negate {
                Requirement::NotEquals(k.into(), v.into())
            } else {
                Requirement::Equals(k.into(), v.into())
            });
        }
    }
    let mut words = t.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default().trim();
    let rest = words.next().unwrap_or_default().trim();
    if rest.is_empty() {
        check_label_key(key)?;
        return Ok(Requirement::Exists(key.to_string()));
    }
    check_label_key(key)?;
    if let Some(set) = rest.strip_prefix("notin") {
        return Ok(Requirement::NotIn(key.into(), parse_set(t, set)?));
    }
    if let Some(set) = rest.strip_prefix("in") {
        return Ok(Requirement::In(key.into(), parse_set(t, set)?));
    }
    Err(format!(
        "unable to parse requirement {t:?}: expected =, ==, !=, in, notin or a bare key"
    ))
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        split_terms(s)
            .into_iter()
            .map(parse_term)
            .collect::<Result<Vec<_>, _>>()
            .map(LabelSelector)
    }

    /// The selector `matchLabels` stands for.
    pub fn from_map(labels: &BTreeMap<String, String>) -> Self {
        LabelSelector(
            labels
                .iter()
                .map(|(k, v)| Requirement::Equals(k.clone(), v.clone()))
                .collect(),
        )
    }

    /// The selector a `metav1.LabelSelector` object (`matchLabels` and `matchExpressions`)
    /// stands for. Errors name the offending expression.
    pub fn from_spec(spec: &Value) -> Result<Self, String> {
        let mut reqs: Vec<Requirement> = object::string_map(spec.get("matchLabels"))
            .into_iter()
            .map(|(k, v)| Requirement::Equals(k, v))
            .collect();
        let exprs = spec
            .get("matchExpressions")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, e) in exprs.iter().enumerate() {
            let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
            let values: Vec<String> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let op = e
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let path = format!("matchExpressions[{i}]");
            if key.is_empty() {
                return Err(format!("{path}.key: Required value"));
            }
            let req = match op {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(format!(
                        "{path}.values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
                    ))
                }
                "In" => Requirement::In(key.into(), values),
                "NotIn" => Requirement::NotIn(key.into(), values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(format!(
                        "{path}.values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                    ))
                }
                "Exists" => Requirement::Exists(key.into()),
                "DoesNotExist" => Requirement::DoesNotExist(key.into()),
                other => {
                    return Err(format!(
                        "{path}.operator: Unsupported value: {other:?}: supported values: \"In\", \"NotIn\", \"Exists\", \"DoesNotExist\""
                    ))
                }
            };
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }

    pub fn matches_object(&self, obj: &Value) -> bool {
        self.is_empty() || self.matches(&object::labels(obj))
    }
}

/// Fields every kind can be selected on.
const COMMON_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

/// Fields selectable per kind, beyond the common ones (as in Kubernetes).
fn kind_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
        ],
        "Node" => &["spec.unschedulable"],
        "Namespace" => &["status.phase"],
        "Secret" => &["type"],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "reason",
            "type",
        ],
        "Job" => &["status.successful"],
        "ReplicaSet" => &["status.replicas"],
        _ => &[],
    }
}

/// A parsed field selector: `path=value`, `path==value` or `path!=value` terms, all of which must
/// hold. A missing field compares as the empty string, as in Kubernetes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn parse(s: &str, kind: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        let mut terms = Vec::new();
        for term in s.split(',') {
            let t = term.trim();
            let (path, equal, value) = if let Some((p, v)) = t.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = t.split_once("==") {
                (p, true, v)
            } else if let Some((p, v)) = t.split_once('=') {
                (p, true, v)
            } else {
                return Err(format!(
                    "invalid field selector term {t:?}: expected =, == or !="
                ));
            };
            let path = path.trim();
            if !COMMON_FIELDS.contains(&path) && !kind_fields(kind).contains(&path) {
                return Err(format!(
                    "field label not supported: {path} (for {kind}: {})",
                    COMMON_FIELDS
                        .iter()
                        .chain(kind_fields(kind))
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            terms.push((path.to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    pub fn matches_object(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, equal, value)| {
            let actual = object::field_string(obj, path);
            (actual == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_operator_matches_as_in_kubernetes() {
        let l = labels(&[("app", "web"), ("env", "prod")]);
        let cases = [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("env in (prod, staging)", true),
            ("env notin (prod)", false),
            ("missing notin (prod)", true),
            ("missing in (prod)", false),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app=web,env in (prod)", true),
            ("app=web,env=dev", false),
            ("", true),
        ];
        for (s, want) in cases {
            assert_eq!(LabelSelector::parse(s).unwrap().matches(&l), want, "{s}");
        }
    }

    #[test]
    fn bad_selectors_name_the_bad_part() {
        let e = LabelSelector::parse("env in prod").unwrap_err();
        assert!(e.contains("env in prod"), "{e}");
        let e = LabelSelector::parse("app=-bad-").unwrap_err();
        assert!(e.contains("-bad-"), "{e}");
        let e = LabelSelector::parse("env in ()").unwrap_err();
        assert!(e.contains("must not be empty"), "{e}");
    }

    #[test]
    fn field_selectors_compare_strings_and_refuse_unknown_fields() {
        let pod = serde_json::json!({
            "metadata": {"name": "a", "namespace": "default"},
            "spec": {"nodeName": "n1"},
            "status": {"phase": "Running"}
        });
        let s = FieldSelector::parse("spec.nodeName=n1,status.phase!=Pending", "Pod").unwrap();
        assert!(s.matches_object(&pod));
        let s = FieldSelector::parse("spec.nodeName=", "Pod").unwrap();
        assert!(!s.matches_object(&pod));
        let e = FieldSelector::parse("spec.bogus=1", "Pod").unwrap_err();
        assert!(e.contains("field label not supported: spec.bogus"), "{e}");
    }
}
