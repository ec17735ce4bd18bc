//! kubectl's JSONPath templates (`skiff get -o jsonpath=…`), pure: text with `{…}`
//! expressions, `{range …}…{end}`, quoted text (`{"\n"}`), and in expressions `$`/`@`,
//! `.field` and `['field']`, `..field`, `*`, `[n]` (negative from the end), `[start:end:step]`,
//! unions (`['a','b']`, `[0,2]`) and filters (`[?(@.type=="Ready")]` with `==`, `!=`, `<`,
//! `<=`, `>`, `>=`, or a bare path for "has it"). Results print as kubectl prints them: strings
//! as they are, numbers and booleans as text, objects and arrays as compact JSON, several
//! results of one expression separated by a space; a missing field prints nothing.

use serde_json::Value;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Expr(Vec<Step>),
    Range(Vec<Step>, Vec<Node>),
}

/// One step of a path, from the current values to the next ones.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Root,
    Current,
    /// A child by name.
    Fields(Vec<String>),
    /// `['a.b', 'c']`: each quoted name read as a path (`\.` for a dot in a name), the results
    /// of the first for every value, then of the second…
    Union(Vec<Vec<Step>>),
    /// Every descendant's field of this name (`..name`), or every descendant (`..*`).
    Descendants(Option<String>),
    Wildcard,
    Indices(Vec<i64>),
    Slice(Option<i64>, Option<i64>, Option<i64>),
    Filter(Box<Filter>),
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Path(Vec<Step>),
    Literal(Value),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    left: Vec<Step>,
    /// None: the left path must exist.
    compare: Option<(String, Operand)>,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Node>);

impl Template {
    /// Parses `text`, with a message naming the problem and where it is.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut stack: Vec<(Vec<Step>, Vec<Node>)> = Vec::new();
        let mut nodes: Vec<Node> = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let Some(open) = rest.find('{') else {
                nodes.push(Node::Text(rest.to_string()));
                break;
            };
            if open > 0 {
                nodes.push(Node::Text(rest[..open].to_string()));
            }
            let inner_start = &rest[open + 1..];
            let close = closing_brace(inner_start)
                .ok_or_else(|| format!("unclosed action in template {text:?}"))?;
            let inner = inner_start[..close].trim();
            rest = &inner_start[close + 1..];
            if inner == "end" {
                let (path, outer) = stack
                    .pop()
                    .ok_or_else(|| format!("not in range, nothing to end in {text:?}"))?;
                let body = std::mem::replace(&mut nodes, outer);
                nodes.push(Node::Range(path, body));
            } else if let Some(path) = inner.strip_prefix("range ") {
                let path = parse_path(path.trim())?;
                stack.push((path, std::mem::take(&mut nodes)));
            } else if inner.starts_with('"') {
                nodes.push(Node::Text(unquote(inner)?));
            } else {
                nodes.push(Node::Expr(parse_path(inner)?));
            }
        }
        if !stack.is_empty() {
            return Err(format!("unclosed range in template {text:?}"));
        }
        Ok(Template(nodes))
    }

    /// The template applied to `root`.
    pub fn render(&self, root: &Value) -> Result<String, String> {
        let mut out = String::new();
        render_nodes(&self.0, root, root, &mut out)?;
        Ok(out)
    }
}

fn render_nodes(
    nodes: &[Node],
    root: &Value,
    current: &Value,
    out: &mut String,
) -> Result<(), String> {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Expr(path) => {
                let results = eval(path, root, current)?;
                let texts: Vec<String> = results.iter().map(|v| print(v)).collect();
                out.push_str(&texts.join(" "));
            }
            Node::Range(path, body) => {
                for item in eval(path, root, current)? {
                    render_nodes(body, root, item, out)?;
                }
            }
        }
    }
    Ok(())
}

/// A value as kubectl prints one result.
fn print(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(_) | Value::Number(_) => v.to_string(),
        Value::Array(_) | Value::Object(_) => v.to_string(),
    }
}

/// Where the `}` closing an action is (quotes may hold braces).
fn closing_brace(s: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '}' => return Some(i),
                _ => {}
            },
        }
    }
    None
}

/// A quoted string's text, with `\n`, `\t`, `\r`, `\\` and escaped quotes.
fn unquote(s: &str) -> Result<String, String> {
    let q = s.chars().next().ok_or("empty string")?;
    let body = s
        .strip_prefix(q)
        .and_then(|b| b.strip_suffix(q))
        .ok_or_else(|| format!("unterminated string {s}"))?;
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => return Err(format!("unterminated escape in {s}")),
        }
    }
    Ok(out)
}

/// A quoted name's text with its backslashes kept (`kubernetes\.io/x`), for [`parse_path`].
fn unquote_keeping_escapes(s: &str) -> Result<String, String> {
    let q = s.chars().next().ok_or("empty name")?;
    s.strip_prefix(q)
        .and_then(|b| b.strip_suffix(q))
        .map(str::to_string)
        .ok_or_else(|| format!("unterminated string {s}"))
}

fn is_field_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-' || c == '/'
}

/// Reads a path (`$.a.b[0]`, `.items[*].metadata.name`, `@.type`).
fn parse_path(text: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let bad = |what: &str, at: usize| format!("{what} at position {at} in {text:?}");
    while i < chars.len() {
        match chars[i] {
            '$' => {
                steps.push(Step::Root);
                i += 1;
            }
            '@' => {
                steps.push(Step::Current);
                i += 1;
            }
            '.' => {
                let recursive = chars.get(i + 1) == Some(&'.');
                i += if recursive { 2 } else { 1 };
                if chars.get(i) == Some(&'*') {
                    i += 1;
                    steps.push(if recursive {
                        Step::Descendants(None)
                    } else {
                        Step::Wildcard
                    });
                    continue;
                }
                let start = i;
                while i < chars.len() && (is_field_char(chars[i]) || chars[i] == '\\') {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                let name: String = chars[start..i.min(chars.len())]
                    .iter()
                    .collect::<String>()
                    .replace("\\.", ".");
                if name.is_empty() {
                    if recursive && chars.get(i) == Some(&'[') {
                        steps.push(Step::Descendants(None));
                        continue;
                    }
                    if !recursive && (i == chars.len() || chars.get(i) == Some(&'[')) {
                        // A lone `.` is the current object (`{.}`).
                        continue;
                    }
                    return Err(bad("a field name is missing", start));
                }
                steps.push(if recursive {
                    Step::Descendants(Some(name))
                } else {
                    Step::Fields(vec![name])
                });
            }
            '[' => {
                let start = i + 1;
                let mut depth = 0;
                let mut quote: Option<char> = None;
                let mut end = None;
                for (j, &c) in chars.iter().enumerate().skip(start) {
                    match quote {
                        Some(q) if c == q => quote = None,
                        Some(_) => {}
                        None => match c {
                            '\'' | '"' => quote = Some(c),
                            '(' => depth += 1,
                            ')' => depth -= 1,
                            ']' if depth == 0 => {
                                end = Some(j);
                                break;
                            }
                            _ => {}
                        },
                    }
                }
                let end = end.ok_or_else(|| bad("unterminated [", i))?;
                let inner: String = chars[start..end].iter().collect();
                steps.push(parse_bracket(inner.trim()).map_err(|e| bad(&e, start))?);
                i = end + 1;
            }
            c if c.is_whitespace() => i += 1,
            c if is_field_char(c) && steps.is_empty() => {
                // `{metadata.name}`: kubectl reads a path without its leading dot too.
                let rest: String = chars[i..].iter().collect();
                let mut more = parse_path(&format!(".{rest}"))?;
                steps.append(&mut more);
                return Ok(steps);
            }
            c => return Err(bad(&format!("unexpected {c:?}"), i)),
        }
    }
    Ok(steps)
}

fn parse_bracket(inner: &str) -> Result<Step, String> {
    if inner == "*" {
        return Ok(Step::Wildcard);
    }
    if let Some(filter) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
        return Ok(Step::Filter(Box::new(parse_filter(filter.trim())?)));
    }
    if inner.starts_with('\'') || inner.starts_with('"') {
        let paths = split_union(inner)
            .iter()
            .map(|n| parse_path(&format!(".{}", unquote_keeping_escapes(n.trim())?)))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Step::Union(paths));
    }
    if inner.contains(':') {
        let parts: Vec<&str> = inner.split(':').collect();
        if parts.len() > 3 {
            return Err(format!("invalid slice [{inner}]"));
        }
        let num = |s: Option<&&str>| -> Result<Option<i64>, String> {
            match s.map(|s| s.trim()) {
                None | Some("") => Ok(None),
                Some(n) => n
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("invalid slice [{inner}]")),
            }
        };
        return Ok(Step::Slice(
            num(parts.first())?,
            num(parts.get(1))?,
            num(parts.get(2))?,
        ));
    }
    let indices = inner
        .split(',')
        .map(|n| {
            n.trim()
                .parse::<i64>()
                .map_err(|_| format!("invalid array index [{inner}]"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Step::Indices(indices))
}

/// Splits `'a','b'` at commas outside quotes.
fn split_union(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => {
                quote = None;
                current.push(c);
            }
            Some(_) => current.push(c),
            None if c == ',' => parts.push(std::mem::take(&mut current)),
            None => {
                if c == '\'' || c == '"' {
                    quote = Some(c);
                }
                current.push(c);
            }
        }
    }
    parts.push(current);
    parts
}

fn parse_filter(text: &str) -> Result<Filter, String> {
    for op in ["==", "!=", "<=", ">=", "<", ">"] {
        if let Some((left, right)) = split_outside_quotes(text, op) {
            let right = right.trim();
            let operand = if right.starts_with('"') || right.starts_with('\'') {
                Operand::Literal(Value::String(unquote(right)?))
            } else if let Ok(n) = right.parse::<f64>() {
                Operand::Literal(serde_json::json!(n))
            } else if right == "true" || right == "false" {
                Operand::Literal(Value::Bool(right == "true"))
            } else {
                Operand::Path(parse_path(right)?)
            };
            return Ok(Filter {
                left: parse_path(left.trim())?,
                compare: Some((op.to_string(), operand)),
            });
        }
    }
    Ok(Filter {
        left: parse_path(text)?,
        compare: None,
    })
}

fn split_outside_quotes<'a>(text: &'a str, op: &str) -> Option<(&'a str, &'a str)> {
    let mut quote: Option<char> = None;
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if text[i..].starts_with(op) => return Some((&text[..i], &text[i + op.len()..])),
            None => {}
        }
    }
    None
}

/// The values `path` leads to from `current` (`root` for `$`).
fn eval<'a>(path: &[Step], root: &'a Value, current: &'a Value) -> Result<Vec<&'a Value>, String> {
    let mut values = vec![current];
    for step in path {
        let mut next = Vec::new();
        if let Step::Union(paths) = step {
            for member in paths {
                for v in &values {
                    next.extend(eval(member, root, v)?);
                }
            }
            values = next;
            continue;
        }
        for v in values {
            match step {
                Step::Union(_) => {}
                Step::Root => next.push(root),
                Step::Current => next.push(v),
                Step::Fields(names) => {
                    for n in names {
                        if let Some(child) = v.get(n.as_str()) {
                            next.push(child);
                        }
                    }
                }
                Step::Wildcard => match v {
                    Value::Array(items) => next.extend(items),
                    Value::Object(map) => next.extend(map.values()),
                    _ => {}
                },
                Step::Descendants(name) => descendants(v, name.as_deref(), &mut next),
                Step::Indices(indices) => {
                    let Value::Array(items) = v else { continue };
                    for &n in indices {
                        let len = items.len() as i64;
                        let at = if n < 0 { n + len } else { n };
                        if at < 0 || at >= len {
                            return Err(format!(
                                "array index out of bounds: index {n}, length {len}"
                            ));
                        }
                        next.push(&items[at as usize]);
                    }
                }
                Step::Slice(start, end, step) => {
                    let Value::Array(items) = v else { continue };
                    let len = items.len() as i64;
                    let clamp = |n: i64| (if n < 0 { n + len } else { n }).clamp(0, len);
                    let from = start.map_or(0, clamp);
                    let to = end.map_or(len, clamp);
                    let step = step.unwrap_or(1);
                    if step <= 0 {
                        return Err(format!("invalid slice step {step}"));
                    }
                    let mut i = from;
                    while i < to {
                        next.push(&items[i as usize]);
                        i += step;
                    }
                }
                Step::Filter(filter) => {
                    let Value::Array(items) = v else { continue };
                    for item in items {
                        if matches(filter, root, item)? {
                            next.push(item);
                        }
                    }
                }
            }
        }
        values = next;
    }
    Ok(values)
}

fn descendants<'a>(v: &'a Value, name: Option<&str>, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if name.is_none_or(|n| n == k) {
                    out.push(child);
                }
            }
            for child in map.values() {
                descendants(child, name, out);
            }
        }
        Value::Array(items) => {
            for child in items {
                if name.is_none() {
                    out.push(child);
                }
            }
            for child in items {
                descendants(child, name, out);
            }
        }
        _ => {}
    }
}

fn matches(filter: &Filter, root: &Value, item: &Value) -> Result<bool, String> {
    let left = eval(&filter.left, root, item)?;
    let Some((op, operand)) = &filter.compare else {
        return Ok(!left.is_empty());
    };
    let right: Vec<Value> = match operand {
        Operand::Literal(v) => vec![v.clone()],
        Operand::Path(p) => eval(p, root, item)?.into_iter().cloned().collect(),
    };
    let (Some(l), Some(r)) = (left.first(), right.first()) else {
        return Ok(false);
    };
    let ordering = match (l, r) {
        (Value::Number(a), Value::Number(b)) => a.as_f64().partial_cmp(&b.as_f64()),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    };
    use std::cmp::Ordering::*;
    Ok(match (op.as_str(), ordering) {
        ("==", Some(o)) => o == Equal,
        ("!=", Some(o)) => o != Equal,
        ("!=", None) => true,
        ("<", Some(o)) => o == Less,
        ("<=", Some(o)) => o != Greater,
        (">", Some(o)) => o == Greater,
        (">=", Some(o)) => o != Less,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The input of the Kubernetes documentation's JSONPath page.
    fn input() -> Value {
        json!({
          "kind": "List",
          "items": [
            {"kind": "None", "metadata": {"name": "127.0.0.1",
                "labels": {"kubernetes.io/hostname": "127.0.0.1"}},
             "status": {"capacity": {"cpu": "4"},
                        "addresses": [{"type": "LegacyHostIP", "address": "127.0.0.1"}]}},
            {"kind": "None", "metadata": {"name": "127.0.0.2"},
             "status": {"capacity": {"cpu": "8"},
                        "addresses": [{"type": "LegacyHostIP", "address": "127.0.0.2"},
                                      {"type": "another", "address": "127.0.0.3"}]}}
          ],
          "users": [
            {"name": "myself", "user": {}},
            {"name": "e2e", "user": {"username": "admin", "password": "secret"}}
          ]
        })
    }

    fn render(template: &str) -> String {
        Template::parse(template)
            .and_then(|t| t.render(&input()))
            .unwrap_or_else(|e| panic!("{template}: {e}"))
    }

    #[test]
    fn the_documented_examples_print_as_kubectl_prints_them() {
        assert_eq!(render("kind is {.kind}"), "kind is List");
        assert_eq!(render("{.kind}"), "List");
        assert_eq!(render("{['kind']}"), "List");
        assert_eq!(render("{$.kind}"), "List");
        assert_eq!(render("{..name}"), "127.0.0.1 127.0.0.2 myself e2e");
        assert_eq!(render("{.items[*].metadata.name}"), "127.0.0.1 127.0.0.2");
        assert_eq!(render("{.users[0].name}"), "myself");
        assert_eq!(render("{.users[-1].name}"), "e2e");
        assert_eq!(render("{.users[0:1].name}"), "myself");
        assert_eq!(
            render("{.items[*]['metadata.name', 'status.capacity']}"),
            r#"127.0.0.1 127.0.0.2 {"cpu":"4"} {"cpu":"8"}"#
        );
        assert_eq!(
            render("{.items[*].status.capacity}"),
            r#"{"cpu":"4"} {"cpu":"8"}"#
        );
        assert_eq!(
            render(r#"{.users[?(@.name=="e2e")].user.password}"#),
            "secret"
        );
        assert_eq!(
            render(r#"{range .items[*]}[{.metadata.name}, {.status.capacity.cpu}] {end}"#),
            "[127.0.0.1, 4] [127.0.0.2, 8] "
        );
        assert_eq!(
            render(r#"{range .items[*]}{.metadata.name}{"\t"}{.status.capacity.cpu}{"\n"}{end}"#),
            "127.0.0.1\t4\n127.0.0.2\t8\n"
        );
        assert_eq!(
            render("{.items[*].metadata.labels['kubernetes\\.io/hostname']}"),
            "127.0.0.1"
        );
    }

    #[test]
    fn filters_missing_fields_and_nesting() {
        assert_eq!(
            render(r#"{.items[*].status.addresses[?(@.type!="LegacyHostIP")].address}"#),
            "127.0.0.3"
        );
        assert_eq!(render("{.users[?(@.user.password)].name}"), "e2e");
        assert_eq!(render("{.nothing.here}"), "");
        assert_eq!(render("{.items[1].metadata}"), r#"{"name":"127.0.0.2"}"#);
        assert_eq!(
            render("{range .items[*]}{range .status.addresses[*]}{.address},{end};{end}"),
            "127.0.0.1,;127.0.0.2,127.0.0.3,;"
        );
        let counts = json!({"items": [{"n": 1}, {"n": 5}, {"n": 3}]});
        let t = Template::parse("{.items[?(@.n>2)].n}").expect("parses");
        assert_eq!(t.render(&counts).expect("renders"), "5 3");
        assert_eq!(
            Template::parse("{.users[5].name}")
                .expect("parses")
                .render(&input()),
            Err("array index out of bounds: index 5, length 2".into())
        );
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        assert_eq!(
            Template::parse("{.kind"),
            Err("unclosed action in template \"{.kind\"".into())
        );
        assert_eq!(
            Template::parse("{range .items[*]}{.kind}"),
            Err("unclosed range in template \"{range .items[*]}{.kind}\"".into())
        );
        assert_eq!(
            Template::parse("{end}"),
            Err("not in range, nothing to end in \"{end}\"".into())
        );
        assert!(Template::parse("{.items[x]}")
            .unwrap_err()
            .contains("invalid array index [x]"));
    }
}
