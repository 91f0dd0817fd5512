//! The `/scale` subresource of workloads and of custom resources that declare one.

use super::write::apply_patch;
use super::*;

/// `spec.selector` (a LabelSelector) in its query-string form, as `/scale` reports it.
pub(super) fn selector_string(selector: Option<&Value>) -> String {
    let Some(selector) = selector else {
        return String::new();
    };
    let mut parts = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    for expr in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = expr.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = expr
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        match expr.get("operator").and_then(Value::as_str) {
            Some("In") => parts.push(format!("{key} in ({})", values.join(","))),
            Some("NotIn") => parts.push(format!("{key} notin ({})", values.join(","))),
            Some("Exists") => parts.push(key.to_string()),
            Some("DoesNotExist") => parts.push(format!("!{key}")),
            _ => {}
        }
    }
    parts.join(",")
}

impl Store {
    pub(super) fn scale_of(rt: &ResourceType, obj: &Value) -> Value {
        let Some(paths) = &rt.scale else {
            return Value::Null;
        };
        let spec = get_path(obj, &paths.spec_replicas).and_then(Value::as_i64).unwrap_or(0);
        let status = get_path(obj, &paths.status_replicas)
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let selector = match &paths.label_selector {
            Some(path) => get_path(obj, path)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            None => selector_string(obj.pointer("/spec/selector")),
        };
        let meta = obj.get("metadata").cloned().unwrap_or_default();
        let mut scale_meta = serde_json::Map::new();
        for field in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] {
            if let Some(v) = meta.get(field) {
                scale_meta.insert(field.into(), v.clone());
            }
        }
        let mut scale = json!({
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": scale_meta,
            "spec": {},
            "status": { "replicas": status },
        });
        if spec != 0 {
            scale["spec"]["replicas"] = json!(spec);
        }
        if !selector.is_empty() {
            scale["status"]["selector"] = json!(selector);
        }
        scale
    }

    pub(super) fn scale_type(rt: &ResourceType, name: &str) -> Result<(), ApiError> {
        if rt.scale.is_none() {
            return Err(ApiError::not_found(subject(rt, name)));
        }
        Ok(())
    }

    /// GET of `/scale`.
    pub fn get_scale(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        Self::scale_type(rt, name)?;
        Ok(Self::scale_of(rt, self.lookup(rt, ns, name)?))
    }

    /// PUT of `/scale`: sets the desired replicas.
    pub fn replace_scale(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        scale: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        Self::scale_type(rt, name)?;
        let Some(paths) = rt.scale.clone() else {
            return Err(ApiError::not_found(subject(rt, name)));
        };
        let old = self.lookup(rt, ns, name)?.clone();
        Self::check_name(&scale, name)?;
        Self::check_preconditions(rt, name, &old, &scale)?;
        let replicas = scale
            .pointer("/spec/replicas")
            .map(|r| r.as_i64().ok_or(()))
            .transpose();
        let replicas = match replicas {
            Ok(r) => r.unwrap_or(0),
            Err(()) => return Err(ApiError::bad_request("spec.replicas must be an integer")),
        };
        if replicas < 0 {
            return Err(ApiError::invalid(
                "Scale",
                subject(rt, name),
                &format!("spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"),
            ));
        }
        let mut new = old.clone();
        set_path(&mut new, &paths.spec_replicas, json!(replicas));
        let key = ObjectKey {
            namespace: ns_key(rt, ns),
            name: name.into(),
        };
        let updated = self.commit_update(rt, &key, &old, new, opts.dry_run)?;
        Ok(Self::scale_of(rt, &updated))
    }

    /// PATCH of `/scale`: the patch applies to the Scale object, whose replicas are then set.
    pub fn patch_scale(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        patch: PatchBody<'_>,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let PatchBody { kind, body } = patch;
        let mut scale = self.get_scale(rt, ns, name)?;
        let kind = if kind == PatchKind::Apply {
            PatchKind::Merge
        } else {
            kind
        };
        let body = if kind == PatchKind::Merge {
            let yaml: Value =
                serde_yaml::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid patch: {e}")))?;
            serde_json::to_vec(&yaml).unwrap_or_default()
        } else {
            body.to_vec()
        };
        apply_patch(kind, &mut scale, &body, rt, name)?;
        self.replace_scale(rt, ns, name, scale, opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_string_renders_match_labels_and_expressions() {
        let selector = json!({ "matchLabels": { "app": "mc" },
                               "matchExpressions": [{ "key": "tier", "operator": "In", "values": ["a", "b"] }] });
        assert_eq!(selector_string(Some(&selector)), "app=mc,tier in (a,b)");
    }
}
