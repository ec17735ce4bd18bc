//! Node affinity (Kubernetes' NodeAffinity filter): a pod's `nodeSelector` and its required node
//! affinity (`affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution`) against a
//! node. The selector's labels must all be on the node, and one of the nodeSelectorTerms must
//! match: within a term every requirement holds, matchExpressions on the node's labels (In,
//! NotIn, Exists, DoesNotExist, and Gt/Lt comparing integers) and matchFields on its name
//! (`metadata.name` In/NotIn). As in Kubernetes, a term without requirements matches no node,
//! an unknown operator matches nothing, and no terms at all means no requirement.

use std::collections::BTreeMap;

use serde_json::Value;
use skiff_api::object;

use super::{list, text, NodeInfo};

/// Why a node fails this predicate, as the scheduler reports it.
pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
    /// Anything else: matches nothing.
    Unknown,
}

impl Operator {
    fn of(s: &str) -> Operator {
        match s {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            "Gt" => Operator::Gt,
            "Lt" => Operator::Lt,
            _ => Operator::Unknown,
        }
    }
}

/// One requirement of a term.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    fn of(v: &Value) -> Requirement {
        Requirement {
            key: text(v, "key").to_string(),
            operator: Operator::of(text(v, "operator")),
            values: list(v, "values")
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
        }
    }

    /// Whether `found` (the node's value for the key, if it has one) satisfies this.
    fn holds(&self, found: Option<&str>) -> bool {
        let listed = |v: &str| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::In => found.is_some_and(listed),
            Operator::NotIn => found.is_none_or(|v| !listed(v)),
            Operator::Exists => found.is_some(),
            Operator::DoesNotExist => found.is_none(),
            Operator::Gt | Operator::Lt => {
                // Kubernetes: exactly one value, and both sides integers.
                let ([bound], Some(found)) = (self.values.as_slice(), found) else {
                    return false;
                };
                let (Ok(bound), Ok(found)) = (bound.parse::<i64>(), found.parse::<i64>()) else {
                    return false;
                };
                if self.operator == Operator::Gt {
                    found > bound
                } else {
                    found < bound
                }
            }
            Operator::Unknown => false,
        }
    }
}

/// One nodeSelectorTerm.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Term {
    expressions: Vec<Requirement>,
    fields: Vec<Requirement>,
}

impl Term {
    fn of(v: &Value) -> Term {
        Term {
            expressions: list(v, "matchExpressions")
                .iter()
                .map(Requirement::of)
                .collect(),
            fields: list(v, "matchFields").iter().map(Requirement::of).collect(),
        }
    }

    fn matches(&self, node: &NodeInfo) -> bool {
        if self.expressions.is_empty() && self.fields.is_empty() {
            return false;
        }
        self.expressions
            .iter()
            .all(|r| r.holds(node.labels.get(&r.key).map(String::as_str)))
            && self.fields.iter().all(|r| {
                r.key == "metadata.name"
                    && matches!(r.operator, Operator::In | Operator::NotIn)
                    && r.holds(Some(&node.name))
            })
    }
}

/// What a pod spec requires of its node's labels and name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequiredAffinity {
    selector: BTreeMap<String, String>,
    terms: Vec<Term>,
}

impl RequiredAffinity {
    /// Read from a pod spec (a Pod's `spec`, or a template's).
    pub fn of(pod_spec: &Value) -> RequiredAffinity {
        let terms = pod_spec
            .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution")
            .map(|r| list(r, "nodeSelectorTerms"))
            .unwrap_or_default();
        RequiredAffinity {
            selector: object::string_map(pod_spec.get("nodeSelector")),
            terms: terms.iter().map(Term::of).collect(),
        }
    }

    /// The terms of a NodeSelector (a PersistentVolume's `spec.nodeAffinity.required`).
    pub fn of_node_selector(selector: &Value) -> RequiredAffinity {
        RequiredAffinity {
            selector: BTreeMap::new(),
            terms: list(selector, "nodeSelectorTerms")
                .iter()
                .map(Term::of)
                .collect(),
        }
    }

    /// Whether `node` satisfies both the selector and the terms.
    pub fn matches(&self, node: &NodeInfo) -> bool {
        self.selector
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v))
            && (self.terms.is_empty() || self.terms.iter().any(|t| t.matches(node)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, labels: &[(&str, &str)]) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..NodeInfo::default()
        }
    }

    fn terms(terms: Value) -> Value {
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}})
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> Value {
        terms(json!([{"matchExpressions": [{"key": key, "operator": op, "values": values}]}]))
    }

    #[test]
    fn match_expressions_on_labels() {
        let gen3 = node("a", &[("gen", "3"), ("disk", "ssd")]);
        let gen10 = node("b", &[("gen", "10")]);
        let odd = node("c", &[("gen", "three")]);
        let bare = node("d", &[]);
        // (case, spec, [a, b, c, d] match)
        let cases = [
            (
                "In",
                expr("disk", "In", &["ssd", "nvme"]),
                [true, false, false, false],
            ),
            (
                "NotIn",
                expr("disk", "NotIn", &["ssd"]),
                [false, true, true, true],
            ),
            (
                "Exists",
                expr("gen", "Exists", &[]),
                [true, true, true, false],
            ),
            (
                "DoesNotExist",
                expr("gen", "DoesNotExist", &[]),
                [false, false, false, true],
            ),
            (
                "Gt compares integers",
                expr("gen", "Gt", &["4"]),
                [false, true, false, false],
            ),
            (
                "Lt compares integers",
                expr("gen", "Lt", &["4"]),
                [true, false, false, false],
            ),
            (
                "Gt is strict",
                expr("gen", "Gt", &["10"]),
                [false, false, false, false],
            ),
            (
                "Gt needs one value",
                expr("gen", "Gt", &["1", "2"]),
                [false, false, false, false],
            ),
            (
                "Gt needs an integer",
                expr("gen", "Gt", &["x"]),
                [false, false, false, false],
            ),
            (
                "an unknown operator",
                expr("gen", "Near", &["3"]),
                [false, false, false, false],
            ),
            ("no requirement", json!({}), [true, true, true, true]),
            ("no terms", terms(json!([])), [true, true, true, true]),
            (
                "an empty term",
                terms(json!([{}])),
                [false, false, false, false],
            ),
            (
                "terms are ORed",
                terms(json!([
                    {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]},
                    {"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["9"]}]}
                ])),
                [true, true, false, false],
            ),
            (
                "requirements in a term are ANDed",
                terms(json!([{"matchExpressions": [
                    {"key": "gen", "operator": "Exists"},
                    {"key": "disk", "operator": "DoesNotExist"}
                ]}])),
                [false, true, true, false],
            ),
            (
                "nodeSelector",
                json!({"nodeSelector": {"disk": "ssd"}}),
                [true, false, false, false],
            ),
            (
                "nodeSelector and affinity both hold",
                {
                    let mut s = expr("gen", "Gt", &["1"]);
                    s["nodeSelector"] = json!({"disk": "ssd"});
                    s
                },
                [true, false, false, false],
            ),
        ];
        for (case, spec, want) in cases {
            let affinity = RequiredAffinity::of(&spec);
            let got = [&gen3, &gen10, &odd, &bare].map(|n| affinity.matches(n));
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn match_fields_on_the_node_name() {
        let a = node("a", &[("gen", "3")]);
        let b = node("b", &[]);
        let field = |key: &str, op: &str| {
            terms(json!([{"matchFields": [{"key": key, "operator": op, "values": ["a"]}]}]))
        };
        let cases = [
            ("In", field("metadata.name", "In"), [true, false]),
            ("NotIn", field("metadata.name", "NotIn"), [false, true]),
            (
                "only In and NotIn",
                field("metadata.name", "Exists"),
                [false, false],
            ),
            (
                "only metadata.name",
                field("metadata.uid", "In"),
                [false, false],
            ),
            (
                "with expressions in the same term",
                terms(json!([{
                    "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a", "b"]}],
                    "matchExpressions": [{"key": "gen", "operator": "Lt", "values": ["5"]}]
                }])),
                [true, false],
            ),
        ];
        for (case, spec, want) in cases {
            let affinity = RequiredAffinity::of(&spec);
            assert_eq!([&a, &b].map(|n| affinity.matches(n)), want, "{case}");
        }
    }
}
