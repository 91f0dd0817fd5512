//! Small helpers over objects held as JSON: metadata access, paths, normalisation.

use serde_json::{Map, Value};

/// `.spec.replicas` → `["spec", "replicas"]` (the form CRD scale paths use).
pub fn dot_path(path: &str) -> Vec<String> {
    path.split('.').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// The value at a path of map keys.
pub fn get_path<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

/// Sets the value at a path of map keys, creating (or replacing non-map) parents.
pub fn set_path(value: &mut Value, path: &[String], new: Value) {
    let Some((last, parents)) = path.split_last() else {
        *value = new;
        return;
    };
    let mut cursor = value;
    for key in parents {
        cursor = ensure_object(cursor)
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    ensure_object(cursor).insert(last.clone(), new);
}

/// Removes the value at a path and then every parent map the removal left empty.
pub fn remove_path(value: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(map) = value.as_object_mut() else {
        return;
    };
    if rest.is_empty() {
        map.remove(first);
        return;
    }
    if let Some(child) = map.get_mut(first) {
        remove_path(child, rest);
        if child.as_object().is_some_and(Map::is_empty) {
            map.remove(first);
        }
    }
}

/// Turns `value` into an object if it is not one, and returns its map.
pub fn ensure_object(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    match value {
        Value::Object(map) => map,
        _ => unreachable!("just made an object"),
    }
}

/// The object's `metadata`, created if missing.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    ensure_object(
        ensure_object(obj)
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new())),
    )
}

/// A string field of `metadata`.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// `metadata.labels` as a map, if any.
pub fn labels(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata")?.get("labels")?.as_object()
}

/// Drops what the real server never stores: null members anywhere (Go's `omitempty` and
/// pruning) and empty lists or maps in metadata (`finalizers: []`, `labels: {}`).
pub fn normalize(obj: &mut Value) {
    drop_nulls(obj);
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|_, v| match v {
            Value::Array(items) => !items.is_empty(),
            Value::Object(map) => !map.is_empty(),
            Value::String(s) => !s.is_empty(),
            _ => true,
        });
    }
}

fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// The current time as the API server writes timestamps (RFC 3339, seconds, UTC).
pub fn now_timestamp() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `true` for names the API server accepts (RFC 1123 subdomain).
pub fn is_valid_name(name: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|c| alnum(c) || c == b'-' || c == b'.')
        && name.bytes().next().is_some_and(alnum)
        && name.bytes().last().is_some_and(alnum)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn paths_set_get_and_prune() {
        let mut obj = json!({ "spec": { "replicas": 1 } });
        let path = dot_path(".status.ready.count");
        set_path(&mut obj, &path, json!(3));
        assert_eq!(get_path(&obj, &path), Some(&json!(3)));
        remove_path(&mut obj, &path);
        assert_eq!(obj, json!({ "spec": { "replicas": 1 } }));
    }

    #[test]
    fn normalize_drops_nulls_and_empty_metadata() {
        let mut obj = json!({
            "metadata": { "name": "a", "labels": {}, "finalizers": [], "annotations": null },
            "spec": { "x": null, "y": [null, 1] }
        });
        normalize(&mut obj);
        assert_eq!(obj, json!({ "metadata": { "name": "a" }, "spec": { "y": [null, 1] } }));
    }

    #[test]
    fn names_follow_rfc1123_subdomains() {
        assert!(is_valid_name("web-0.a"));
        assert!(!is_valid_name("Web"));
        assert!(!is_valid_name("-a"));
        assert!(!is_valid_name(""));
    }
}
