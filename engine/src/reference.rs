//! `${ … }` references inside task params and targets.
//!
//! Three forms exist (whitespace inside the braces is optional):
//! - `${ params.<name>[.<field>…] }`: a resolved workflow param; substituted by the compiler.
//! - `${ item }`: the current item of a `forEach` task; substituted when the run starts.
//! - `${ tasks.<task>.outputs.<key>[.<field>…] }`: an output of an upstream task, substituted when
//!   the run starts. For a `forEach` upstream task, a run of a task expanded over the same list
//!   reads the run of the same item; `${ tasks.<task>[*].outputs.<key> }` reads every run and
//!   gives a list in item order.
//!
//! A string that is exactly one reference is replaced by the referenced JSON value (keeping its
//! type); a reference embedded in a longer string is replaced by its text (strings as they are,
//! other values as compact JSON). Anything else inside `${ }` is an error: CEL belongs in the
//! workflow `params`, which the `workflows` crate evaluates before compiling.

use std::fmt::Write as _;

use serde_json::Value;

/// A parsed reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ref<'a> {
    Param {
        name: &'a str,
        path: Vec<&'a str>,
    },
    Item,
    Output {
        task: &'a str,
        all: bool,
        key: &'a str,
        path: Vec<&'a str>,
    },
}

/// A piece of a template string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    Text(&'a str),
    Ref { raw: &'a str, reference: Ref<'a> },
}

/// Whether `text` may contain a reference (cheap pre-check).
pub(crate) fn has_reference(text: &str) -> bool {
    text.contains("${")
}

/// Splits a template into text and references.
pub(crate) fn parse(text: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            pieces.push(Piece::Text(&rest[..start]));
        }
        let Some(len) = rest[start..].find('}') else {
            return Err(format!("unclosed `${{` at byte {}", offset + start));
        };
        let raw = &rest[start..=start + len];
        let reference = parse_ref(raw[2..raw.len() - 1].trim())?;
        pieces.push(Piece::Ref { raw, reference });
        offset += start + len + 1;
        rest = &rest[start + len + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

fn segments(text: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = text.split('.').collect();
    parts.iter().all(|p| !p.is_empty()).then_some(parts)
}

fn parse_ref(inner: &str) -> Result<Ref<'_>, String> {
    let unsupported = || {
        format!(
            "unsupported reference `${{ {inner} }}`: expected `params.<name>`, `item` or \
             `tasks.<task>.outputs.<key>` (CEL belongs in the workflow params)"
        )
    };
    if inner == "item" {
        return Ok(Ref::Item);
    }
    if let Some(rest) = inner.strip_prefix("params.") {
        let mut parts = segments(rest).ok_or_else(unsupported)?;
        let name = parts.remove(0);
        return Ok(Ref::Param { name, path: parts });
    }
    if let Some(rest) = inner.strip_prefix("tasks.") {
        let (task, keys) = rest.split_once(".outputs.").ok_or_else(unsupported)?;
        let (task, all) = match task.strip_suffix("[*]") {
            Some(task) => (task, true),
            None => (task, false),
        };
        if task.is_empty() || task.contains(['[', ']', '.']) {
            return Err(unsupported());
        }
        let mut parts = segments(keys).ok_or_else(unsupported)?;
        let key = parts.remove(0);
        return Ok(Ref::Output {
            task,
            all,
            key,
            path: parts,
        });
    }
    Err(unsupported())
}

/// Follows `path` (object fields, or array indices given as numbers) into `value`.
pub(crate) fn lookup<'v>(value: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(value, |current, segment| match current {
        Value::Object(map) => map.get(*segment),
        Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// The text a value contributes when embedded in a longer string.
pub(crate) fn embed(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => out.push_str(s),
        other => out.push_str(&other.to_string()),
    }
}

/// Rewrites every string in `value` with `resolve`, which maps a reference to `Some(value)` to
/// substitute it or `None` to keep its raw text. Stops at the first error; `pointer` is the JSON
/// pointer of the string being rewritten.
pub(crate) fn rewrite<F>(
    value: &mut Value,
    pointer: &mut String,
    resolve: &mut F,
) -> Result<(), (String, String)>
where
    F: FnMut(&Ref<'_>) -> Result<Option<Value>, String>,
{
    match value {
        Value::String(text) if has_reference(text) => {
            let pieces = parse(text).map_err(|e| (pointer.clone(), e))?;
            if let [Piece::Ref { reference, .. }] = pieces.as_slice() {
                if let Some(new) = resolve(reference).map_err(|e| (pointer.clone(), e))? {
                    *value = new;
                }
                return Ok(());
            }
            let mut out = String::with_capacity(text.len());
            for piece in &pieces {
                match piece {
                    Piece::Text(t) => out.push_str(t),
                    Piece::Ref { raw, reference } => {
                        match resolve(reference).map_err(|e| (pointer.clone(), e))? {
                            Some(v) => embed(&v, &mut out),
                            None => out.push_str(raw),
                        }
                    }
                }
            }
            *value = Value::String(out);
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = pointer.len();
                let _ = write!(pointer, "/{i}");
                rewrite(item, pointer, resolve)?;
                pointer.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let len = pointer.len();
                push_pointer_segment(pointer, key);
                rewrite(item, pointer, resolve)?;
                pointer.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Appends `/segment` to a JSON pointer, escaping `~` and `/` (RFC 6901).
pub(crate) fn push_pointer_segment(pointer: &mut String, segment: &str) {
    pointer.push('/');
    for c in segment.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}

/// Replaces `${ item }` (with any inner spacing) in a target template; other text is kept.
pub(crate) fn substitute_item(template: &str, item: &str) -> String {
    if !has_reference(template) {
        return template.to_owned();
    }
    match parse(template) {
        Ok(pieces) => pieces
            .iter()
            .map(|piece| match piece {
                Piece::Text(t) => *t,
                Piece::Ref {
                    reference: Ref::Item, ..
                } => item,
                Piece::Ref { raw, .. } => raw,
            })
            .collect(),
        Err(_) => template.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn references_parse_into_their_three_forms() {
        let pieces = parse("peers=${ params.peers.list }, me=${item}").unwrap();
        assert_eq!(pieces[0], Piece::Text("peers="));
        assert!(
            matches!(&pieces[1], Piece::Ref { reference: Ref::Param { name: "peers", path }, .. } if path == &["list"])
        );
        assert!(matches!(
            &pieces[3],
            Piece::Ref {
                reference: Ref::Item,
                ..
            }
        ));
        let out = parse("${ tasks.gentx[*].outputs.file }").unwrap();
        assert!(matches!(
            &out[0],
            Piece::Ref {
                reference: Ref::Output {
                    task: "gentx",
                    all: true,
                    key: "file",
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn malformed_references_are_rejected() {
        assert!(parse("${ params.x").unwrap_err().contains("unclosed"));
        assert!(parse("${ self.spec.image }").unwrap_err().contains("unsupported"));
        assert!(parse("${ tasks.a.result }").is_err());
        assert!(parse("${ params. }").is_err());
    }

    #[test]
    fn whole_references_keep_the_value_type_and_embedded_ones_become_text() {
        let mut value = json!({"n": "${ params.n }", "s": "n=${ params.n }", "keep": "${ item }"});
        let params = json!({"n": 3});
        rewrite(&mut value, &mut String::new(), &mut |r| match r {
            Ref::Param { name, path } => {
                let mut full = vec![*name];
                full.extend(path);
                Ok(lookup(&params, &full).cloned())
            }
            _ => Ok(None),
        })
        .unwrap();
        assert_eq!(value, json!({"n": 3, "s": "n=3", "keep": "${ item }"}));
    }

    #[test]
    fn item_substitution_in_targets() {
        assert_eq!(substitute_item("${ item }-0", "node"), "node-0");
        assert_eq!(substitute_item("fixed", "node"), "fixed");
    }
}
