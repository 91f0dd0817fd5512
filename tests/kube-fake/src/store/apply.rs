//! Server-side apply, with a simple model of field ownership per manager.

use super::*;

impl Store {
    /// Server-side apply, with a simple model of field ownership: each applying manager
    /// owns the fields it last applied; fields it stops applying are removed unless
    /// another manager owns them; applying a different value to another manager's field
    /// is a conflict unless forced (then the field changes hands).
    pub(super) fn apply(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        body: &[u8],
        target: Target,
        opts: &WriteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let Some(manager) = opts.field_manager.clone().filter(|m| !m.is_empty()) else {
            return Err(ApiError::invalid(
                "PatchOptions",
                Subject {
                    group: "meta.k8s.io",
                    plural: "patchoptions",
                    name: "",
                },
                "fieldManager: Required value: is required for apply patch",
            ));
        };
        let mut config: Value =
            serde_yaml::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        if !config.is_object() {
            return Err(ApiError::bad_request("the applied configuration must be an object"));
        }
        for required in ["apiVersion", "kind"] {
            if config.get(required).and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(ApiError::bad_request(format!("{required} must be set")));
            }
        }
        Self::check_type_meta(rt, &mut config)?;
        Self::check_name(&config, name)?;
        normalize(&mut config);
        let part = match target {
            Target::Status => {
                json!({ "status": config.get("status").cloned().unwrap_or(json!({})) })
            }
            _ => {
                let mut part = config.clone();
                if rt.status_subresource
                    && let Some(map) = part.as_object_mut()
                {
                    map.remove("status");
                }
                part
            }
        };
        let fields = patch::applied_fields(&part);
        let storage = rt.storage();
        let key = ObjectKey {
            namespace: ns_key(rt, ns),
            name: name.into(),
        };

        let Ok(old) = self.lookup(rt, ns, name).cloned() else {
            if target == Target::Status {
                return Err(ApiError::not_found(subject(rt, name)));
            }
            let mut fresh = config;
            meta_mut(&mut fresh).insert("name".into(), json!(name));
            meta_mut(&mut fresh).remove("resourceVersion");
            let created = self.insert(rt, ns, fresh, Target::Main, opts.dry_run)?;
            if !opts.dry_run {
                self.ownership
                    .entry((storage, key))
                    .or_default()
                    .insert((manager, target), fields);
            }
            return Ok((created, true));
        };

        Self::check_preconditions(rt, name, &old, &config)?;
        let mut owners = self
            .ownership
            .get(&(storage.clone(), key.clone()))
            .cloned()
            .unwrap_or_default();
        let mut conflicts = Vec::new();
        for ((other, _), owned) in owners.iter().filter(|((m, _), _)| *m != manager) {
            for field in fields.intersection(owned) {
                if get_path(&old, field) != get_path(&part, field) {
                    conflicts.push((other.clone(), field.clone()));
                }
            }
        }
        if !conflicts.is_empty() {
            if !opts.force {
                return Err(apply_conflict(rt, name, &conflicts));
            }
            for (other, field) in &conflicts {
                for ((m, _), owned) in owners.iter_mut() {
                    if m == other {
                        owned.remove(field);
                    }
                }
            }
        }
        let previous = owners.get(&(manager.clone(), target)).cloned().unwrap_or_default();
        let kept: BTreeSet<FieldPath> = owners
            .iter()
            .filter(|((m, t), _)| !(*m == manager && *t == target))
            .flat_map(|(_, f)| f.iter().cloned())
            .collect();
        let dropped: BTreeSet<FieldPath> = previous.difference(&fields).cloned().collect();

        let mut doc = Self::present(rt, &old);
        patch::remove_fields(&mut doc, &dropped, &kept);
        let mut merged = part;
        meta_mut(&mut merged).remove("resourceVersion");
        patch::apply_merge(&mut doc, &merged);
        let new = Self::merge_target(rt, &old, doc, target);
        let result = self.commit_update(rt, &key, &old, new, opts.dry_run)?;
        if !opts.dry_run && self.lookup(rt, ns, name).is_ok() {
            owners.insert((manager, target), fields);
            self.ownership.insert((storage, key), owners);
        }
        Ok((result, false))
    }
}

/// The 409 a conflicting apply gets, with one cause per field.
pub(super) fn apply_conflict(rt: &ResourceType, name: &str, conflicts: &[(String, FieldPath)]) -> ApiError {
    let listed: Vec<String> = conflicts
        .iter()
        .map(|(manager, field)| format!("conflict with \"{manager}\": {}", patch::render_path(field)))
        .collect();
    let mut error = ApiError::conflict(subject(rt, name), "");
    error.message = format!(
        "Apply failed with {} conflict{}: {}",
        conflicts.len(),
        if conflicts.len() == 1 { "" } else { "s" },
        listed.join("\n")
    );
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(manager, field)| {
            json!({ "reason": "FieldManagerConflict", "message": format!("conflict with \"{manager}\""), "field": patch::render_path(field) })
        })
        .collect();
    if let Some(details) = error.details.as_mut() {
        details["causes"] = json!(causes);
    }
    error
}
