//! The PATCH flavours and the field bookkeeping server-side apply needs.

use std::collections::BTreeSet;

use json_patch::PatchOperation;
use serde_json::Value;

use crate::object::{get_path, remove_path};

/// The PATCH content types the API server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`, applied here as a merge patch.
    Strategic,
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/apply-patch+yaml`: server-side apply.
    Apply,
}

impl PatchKind {
    /// Reads the content type (parameters after `;` are ignored).
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        match content_type.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/json-patch+json" => Some(Self::Json),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Why a JSON patch failed: a malformed patch is a 400, one that does not apply a 422.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonPatchError {
    /// The body is not a list of RFC 6902 operations.
    Malformed(String),
    /// An operation failed (a `test` that did not hold, a missing path).
    Failed(String),
}

/// Applies an RFC 6902 patch with the API server's (Go json-patch) semantics, which
/// differ from RFC 6902 in one place kube-runtime relies on: a `test` for `null` passes
/// when the path is absent. kube's finalizer helper adds its first finalizer with
/// `test /metadata/finalizers == null` on objects that have no finalizers field.
pub fn json_patch(doc: &mut Value, body: &[u8]) -> Result<(), JsonPatchError> {
    let patch: json_patch::Patch =
        serde_json::from_slice(body).map_err(|e| JsonPatchError::Malformed(format!("invalid JSON patch: {e}")))?;
    let mut work = doc.clone();
    for op in patch.0 {
        if let PatchOperation::Test(test) = &op
            && test.value.is_null()
            && work.pointer(test.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch(&mut work, std::slice::from_ref(&op)).map_err(|e| JsonPatchError::Failed(e.to_string()))?;
    }
    *doc = work;
    Ok(())
}

/// List fields a strategic merge patch merges item by item, keyed as the built-in types
/// declare with `patchMergeKey` (the commonly patched ones; other lists are replaced).
const MERGE_KEYS: &[(&str, &str)] = &[
    ("containers", "name"),
    ("initContainers", "name"),
    ("ephemeralContainers", "name"),
    ("env", "name"),
    ("volumes", "name"),
    ("volumeMounts", "mountPath"),
    ("volumeDevices", "devicePath"),
    ("imagePullSecrets", "name"),
    ("conditions", "type"),
    ("ownerReferences", "uid"),
    ("hostAliases", "ip"),
    ("topologySpreadConstraints", "topologyKey"),
];

fn merge_key(field: &str, patch_items: &[Value]) -> Option<&'static str> {
    if field == "ports" {
        // Container ports merge on containerPort, Service ports on port.
        let container = patch_items.iter().any(|i| i.get("containerPort").is_some());
        return Some(if container { "containerPort" } else { "port" });
    }
    MERGE_KEYS.iter().find(|(f, _)| *f == field).map(|(_, key)| *key)
}

fn is_delete_directive(value: &Value) -> bool {
    value.get("$patch").and_then(Value::as_str) == Some("delete")
}

/// A patch value with its `$` directives removed, for storing.
fn without_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), without_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_directives).collect()),
        other => other.clone(),
    }
}

/// Applies a strategic merge patch the way the API server does for the common cases:
/// maps merge, `null` deletes, lists with a known merge key (containers, env, ports,
/// volumes, conditions, …) merge item by item, `finalizers` merge as a set, and the
/// directives `$patch: delete|replace` and `$deleteFromPrimitiveList/…` apply; other
/// directives (`$setElementOrder`, `$retainKeys`) are dropped and other lists replaced.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = without_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let Value::Object(target_map) = target else { return };
    for (key, value) in patch_map {
        if let Some(list) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Value::Array(remove)) = (target_map.get_mut(list), value) {
                items.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() || is_delete_directive(value) {
            target_map.remove(key);
            continue;
        }
        match (target_map.get_mut(key), value) {
            (Some(existing @ Value::Object(_)), Value::Object(_)) => strategic_merge(existing, value),
            (Some(Value::Array(existing)), Value::Array(items)) if key == "finalizers" => {
                for item in items {
                    if !existing.contains(item) {
                        existing.push(item.clone());
                    }
                }
            }
            (Some(Value::Array(existing)), Value::Array(items)) if merge_key(key, items).is_some() => {
                let merge_on = merge_key(key, items).unwrap_or("name");
                for item in items {
                    let id = item.get(merge_on);
                    let found = id.and_then(|id| existing.iter().position(|e| e.get(merge_on) == Some(id)));
                    match found {
                        Some(index) if is_delete_directive(item) => {
                            existing.remove(index);
                        }
                        Some(index) => strategic_merge(&mut existing[index], item),
                        None if is_delete_directive(item) => {}
                        None => existing.push(without_directives(item)),
                    }
                }
            }
            _ => {
                target_map.insert(key.clone(), without_directives(value));
            }
        }
    }
}

/// A field's location, as map keys from the object's root.
pub type FieldPath = Vec<String>;

/// The fields an applied configuration sets. Maps are walked into; anything else —
/// scalars, lists (treated as atomic) and empty maps — is one field.
pub fn applied_fields(config: &Value) -> BTreeSet<FieldPath> {
    fn walk(value: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, child) in map {
                    prefix.push(key.clone());
                    walk(child, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                out.insert(prefix.clone());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(config, &mut Vec::new(), &mut out);
    // Identity fields are not owned: they name the object rather than configure it.
    out.retain(|p| {
        !matches!(
            p.iter().map(String::as_str).collect::<Vec<_>>().as_slice(),
            ["apiVersion"] | ["kind"] | ["metadata", "name" | "namespace" | "resourceVersion" | "uid"]
        )
    });
    out
}

/// Merges an applied configuration into an object: maps merge key by key, everything
/// else (scalars, lists) replaces what was there.
pub fn apply_merge(target: &mut Value, config: &Value) {
    match (target, config) {
        (Value::Object(target), Value::Object(config)) => {
            for (key, value) in config {
                match target.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => apply_merge(existing, value),
                    _ => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, config) => *target = config.clone(),
    }
}

/// Removes fields a manager stopped applying, unless `keep` (fields other managers own)
/// holds them or a parent of them.
pub fn remove_fields(obj: &mut Value, dropped: &BTreeSet<FieldPath>, keep: &BTreeSet<FieldPath>) {
    for path in dropped {
        let shared = keep.iter().any(|k| k.starts_with(path) || path.starts_with(k));
        if !shared && get_path(obj, path).is_some() {
            remove_path(obj, path);
        }
    }
}

/// `.spec.replicas` style rendering of a field path, for conflict messages.
pub fn render_path(path: &FieldPath) -> String {
    path.iter().map(|k| format!(".{k}")).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(
            PatchKind::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchKind::Merge)
        );
        assert_eq!(
            PatchKind::from_content_type("application/apply-patch+yaml"),
            Some(PatchKind::Apply)
        );
        assert_eq!(PatchKind::from_content_type("application/json"), None);
    }

    #[test]
    fn test_for_null_passes_on_a_missing_path_like_the_go_server() {
        let mut doc = json!({ "metadata": { "name": "a" } });
        let patch = json!([
            { "op": "test", "path": "/metadata/finalizers", "value": null },
            { "op": "add", "path": "/metadata/finalizers", "value": ["f"] }
        ]);
        json_patch(&mut doc, patch.to_string().as_bytes()).unwrap();
        assert_eq!(doc["metadata"]["finalizers"], json!(["f"]));
    }

    #[test]
    fn failed_test_leaves_the_document_alone() {
        let mut doc = json!({ "a": 1 });
        let patch = json!([{ "op": "replace", "path": "/a", "value": 2 }, { "op": "test", "path": "/a", "value": 3 }]);
        assert!(matches!(
            json_patch(&mut doc, patch.to_string().as_bytes()),
            Err(JsonPatchError::Failed(_))
        ));
        assert_eq!(doc, json!({ "a": 1 }));
        assert!(matches!(json_patch(&mut doc, b"{}"), Err(JsonPatchError::Malformed(_))));
    }

    #[test]
    fn strategic_merge_merges_keyed_lists_and_honours_directives() {
        let mut pod = json!({ "metadata": { "finalizers": ["a"], "labels": { "x": "1", "y": "2" } },
            "spec": { "containers": [{ "name": "mc", "image": "old", "ports": [{ "containerPort": 25565 }] },
                                      { "name": "sidecar", "image": "s" }],
                      "tolerations": [{ "key": "t" }] } });
        let patch = json!({
            "metadata": { "finalizers": ["b"], "labels": { "y": null } },
            "spec": { "$setElementOrder/containers": [{ "name": "mc" }],
                      "containers": [{ "name": "mc", "image": "new" }, { "name": "sidecar", "$patch": "delete" }],
                      "tolerations": [{ "key": "u" }] } });
        strategic_merge(&mut pod, &patch);
        assert_eq!(
            pod,
            json!({ "metadata": { "finalizers": ["a", "b"], "labels": { "x": "1" } },
            "spec": { "containers": [{ "name": "mc", "image": "new", "ports": [{ "containerPort": 25565 }] }],
                      "tolerations": [{ "key": "u" }] } })
        );
        strategic_merge(
            &mut pod,
            &json!({ "metadata": { "$deleteFromPrimitiveList/finalizers": ["a"] } }),
        );
        assert_eq!(pod["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn apply_bookkeeping() {
        let config = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "c", "labels": { "a": "1" } },
                              "data": { "x": "1" }, "list": [1, 2] });
        let fields = applied_fields(&config);
        let rendered: Vec<_> = fields.iter().map(render_path).collect();
        assert_eq!(rendered, vec![".data.x", ".list", ".metadata.labels.a"]);

        let mut obj = json!({ "data": { "x": "0", "y": "2" }, "list": [9] });
        apply_merge(&mut obj, &json!({ "data": { "x": "1" }, "list": [1] }));
        assert_eq!(obj, json!({ "data": { "x": "1", "y": "2" }, "list": [1] }));

        let dropped = BTreeSet::from([vec!["data".to_string(), "x".to_string()], vec!["list".to_string()]]);
        let keep = BTreeSet::from([vec!["list".to_string()]]);
        remove_fields(&mut obj, &dropped, &keep);
        assert_eq!(obj, json!({ "data": { "y": "2" }, "list": [1] }));
    }
}
