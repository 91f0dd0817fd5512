//! Creating and updating objects: identity, validation, status separation, generation,
//! no-op detection, preconditions, and the merge/strategic/JSON patch flavours.

use super::*;

impl Store {
    pub(super) fn new_uid(&mut self) -> String {
        self.uid_seq += 1;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (self.uid_seed >> 32) as u32,
            (self.uid_seed >> 16) as u16,
            (self.uid_seed >> 4) as u16 & 0xfff,
            (self.uid_seq >> 48) as u16 & 0xfff,
            self.uid_seq & 0xffff_ffff_ffff
        )
    }

    pub(super) fn random_suffix(&mut self) -> String {
        (0..GENERATE_NAME_SUFFIX_LEN)
            .map(|_| {
                // xorshift64: names need to look random, not be unpredictable.
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                GENERATE_NAME_ALPHABET[(self.rng % GENERATE_NAME_ALPHABET.len() as u64) as usize] as char
            })
            .collect()
    }

    /// A body's apiVersion and kind must name the resource of the URL (missing ones are
    /// filled in from it).
    pub(super) fn check_type_meta(rt: &ResourceType, body: &mut Value) -> Result<(), ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request("the body of the request must be a JSON object"));
        }
        let api_version = rt.api_version();
        match body.get("apiVersion").and_then(Value::as_str) {
            Some(v) if v != api_version => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({api_version})"
                )));
            }
            _ => body["apiVersion"] = json!(api_version),
        }
        match body.get("kind").and_then(Value::as_str) {
            Some(k) if k != rt.kind => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    rt.kind
                )));
            }
            _ => body["kind"] = json!(rt.kind),
        }
        Ok(())
    }

    /// The object's namespace must be the URL's.
    pub(super) fn check_namespace(rt: &ResourceType, body: &mut Value, ns: &str) -> Result<(), ApiError> {
        let meta = meta_mut(body);
        if !rt.namespaced {
            meta.remove("namespace");
            return Ok(());
        }
        match meta.get("namespace").and_then(Value::as_str) {
            Some(given) if !given.is_empty() && given != ns => Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            )),
            _ => {
                meta.insert("namespace".into(), json!(ns));
                Ok(())
            }
        }
    }

    /// POST: create an object (201 on success).
    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        mut body: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        Self::check_type_meta(rt, &mut body)?;
        if rv_of(&body).is_some_and(|rv| !rv.is_empty()) {
            return Err(ApiError::new(
                500,
                "InternalError",
                "resourceVersion should not be set on objects to be created",
            ));
        }
        self.insert(rt, ns, body, Target::Main, opts.dry_run)
    }

    /// Everything a create does after the request-level checks.
    pub(super) fn insert(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        mut body: Value,
        target: Target,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        normalize(&mut body);
        Self::check_namespace(rt, &mut body, ns)?;
        if rt.namespaced {
            let namespaces = self.resolve("", "v1", "namespaces")?;
            if self.lookup(&namespaces, "", ns).is_err() {
                return Err(ApiError::not_found(subject(&namespaces, ns)));
            }
        }
        let storage = rt.storage();
        let name = match meta_str(&body, "name").filter(|n| !n.is_empty()) {
            Some(name) => name.to_string(),
            None => {
                let Some(prefix) = meta_str(&body, "generateName")
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                else {
                    return Err(ApiError::invalid(
                        &rt.kind,
                        subject(rt, ""),
                        "metadata.name: Required value: name or generateName is required",
                    ));
                };
                loop {
                    let candidate = format!("{prefix}{}", self.random_suffix());
                    let key = ObjectKey {
                        namespace: ns_key(rt, ns),
                        name: candidate.clone(),
                    };
                    if !self.objects.get(&storage).is_some_and(|objs| objs.contains_key(&key)) {
                        break candidate;
                    }
                }
            }
        };
        if !is_valid_name(&name) {
            return Err(ApiError::invalid(
                &rt.kind,
                subject(rt, &name),
                &format!(
                    "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                ),
            ));
        }
        let key = ObjectKey {
            namespace: ns_key(rt, ns),
            name: name.clone(),
        };
        if self.objects.get(&storage).is_some_and(|objs| objs.contains_key(&key)) {
            return Err(ApiError::already_exists(subject(rt, &name)));
        }

        let uid = self.new_uid();
        let meta = meta_mut(&mut body);
        meta.insert("name".into(), json!(name));
        meta.insert("uid".into(), json!(uid));
        meta.insert("creationTimestamp".into(), json!(now_timestamp()));
        for system in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
            "managedFields",
            "selfLink",
        ] {
            meta.remove(system);
        }
        if rt.tracks_generation {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        if rt.status_subresource
            && target != Target::Raw
            && let Some(map) = body.as_object_mut()
        {
            map.remove("status");
        }
        apply_defaults(rt, &mut body, target);
        if rt.crd.is_none() && rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            let types = types_from_crd(&body).map_err(|why| ApiError::invalid(&rt.kind, subject(rt, &name), &why))?;
            if target != Target::Raw || body.get("status").is_none() {
                body["status"] = crd_status(&body, &types);
            }
        }
        if dry_run {
            return Ok(Self::present(rt, &body));
        }
        let rv = self.tick();
        meta_mut(&mut body).insert("resourceVersion".into(), json!(rv.to_string()));
        self.objects
            .entry(storage.clone())
            .or_default()
            .insert(key.clone(), body.clone());
        self.record(
            storage.clone(),
            key.namespace.clone(),
            ChangeKind::Added,
            body.clone(),
            None,
        );
        self.after_write(&storage);
        Ok(Self::present(rt, &body))
    }

    /// The object as a write to `target` leaves it: main writes keep the stored status
    /// (for kinds with a status subresource), status writes keep everything but status.
    pub(super) fn merge_target(rt: &ResourceType, old: &Value, mut new: Value, target: Target) -> Value {
        let take_status = |into: &mut Value, from: &Value| {
            if let Some(map) = into.as_object_mut() {
                match from.get("status") {
                    Some(status) => map.insert("status".into(), status.clone()),
                    None => map.remove("status"),
                };
            }
        };
        match target {
            Target::Main if rt.status_subresource => {
                take_status(&mut new, old);
                new
            }
            Target::Status => {
                let mut out = old.clone();
                take_status(&mut out, &new);
                out
            }
            _ => new,
        }
    }

    /// Stores a new state of an existing object: keeps what clients cannot change, skips
    /// writes that change nothing, bumps generation on spec changes, completes deletions
    /// whose last finalizer went away.
    pub(super) fn commit_update(
        &mut self,
        rt: &ResourceType,
        key: &ObjectKey,
        old: &Value,
        mut new: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        new["apiVersion"] = json!(rt.api_version());
        new["kind"] = json!(rt.kind);
        {
            let old_meta = old
                .get("metadata")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let meta = meta_mut(&mut new);
            for system in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
                "managedFields",
            ] {
                match old_meta.get(system) {
                    Some(v) => meta.insert(system.into(), v.clone()),
                    None => meta.remove(system),
                };
            }
        }
        normalize(&mut new);
        let deleting = meta_str(old, "deletionTimestamp").is_some();
        if deleting {
            let before = finalizers(old);
            if let Some(added) = finalizers(&new).into_iter().find(|f| !before.contains(f)) {
                return Err(ApiError::invalid(
                    &rt.kind,
                    subject(rt, &key.name),
                    &format!(
                        "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers [\"{added}\"]"
                    ),
                ));
            }
        }
        if rt.crd.is_none() && rt.plural == "customresourcedefinitions" {
            types_from_crd(&new).map_err(|why| ApiError::invalid(&rt.kind, subject(rt, &key.name), &why))?;
        }
        if same_state(old, &new) {
            return Ok(Self::present(rt, old));
        }
        if rt.tracks_generation && spec_part(rt, old) != spec_part(rt, &new) {
            let generation = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0) + 1;
            meta_mut(&mut new).insert("generation".into(), json!(generation));
        }
        if dry_run {
            return Ok(Self::present(rt, &new));
        }
        if deleting && finalizers(&new).is_empty() {
            self.objects.entry(rt.storage()).or_default().insert(key.clone(), new);
            let removed = self.remove_object(&rt.storage(), key, Propagation::Background);
            return Ok(Self::present(rt, &removed));
        }
        let rv = self.tick();
        meta_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
        let storage = rt.storage();
        self.objects
            .entry(storage.clone())
            .or_default()
            .insert(key.clone(), new.clone());
        self.record(
            storage.clone(),
            key.namespace.clone(),
            ChangeKind::Modified,
            new.clone(),
            Some(old.clone()),
        );
        self.after_write(&storage);
        Ok(Self::present(rt, &new))
    }

    /// The preconditions a write's body carries: a stale resourceVersion or another uid
    /// is a 409 Conflict.
    pub(super) fn check_preconditions(
        rt: &ResourceType,
        name: &str,
        current: &Value,
        wanted: &Value,
    ) -> Result<(), ApiError> {
        if let Some(uid) = meta_str(wanted, "uid").filter(|u| !u.is_empty())
            && Some(uid) != meta_str(current, "uid")
        {
            let why = format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta_str(current, "uid").unwrap_or_default()
            );
            return Err(ApiError::conflict(subject(rt, name), &why));
        }
        if let Some(rv) = rv_of(wanted).filter(|rv| !rv.is_empty())
            && Some(rv) != rv_of(current)
        {
            return Err(ApiError::conflict(subject(rt, name), ApiError::MODIFIED));
        }
        Ok(())
    }

    pub(super) fn check_name(body: &Value, name: &str) -> Result<(), ApiError> {
        match meta_str(body, "name") {
            Some(given) if given != name => Err(ApiError::bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            ))),
            _ => Ok(()),
        }
    }

    /// PUT of an object or its status.
    pub fn replace(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        mut body: Value,
        target: Target,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        Self::check_type_meta(rt, &mut body)?;
        Self::check_name(&body, name)?;
        Self::check_namespace(rt, &mut body, ns)?;
        let old = self.lookup(rt, ns, name)?.clone();
        if rv_of(&body).is_none_or(str::is_empty) && !rt.unconditional_update {
            return Err(ApiError::invalid(
                &rt.kind,
                subject(rt, name),
                "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
            ));
        }
        Self::check_preconditions(rt, name, &old, &body)?;
        let new = Self::merge_target(rt, &old, body, target);
        let key = ObjectKey {
            namespace: ns_key(rt, ns),
            name: name.into(),
        };
        self.commit_update(rt, &key, &old, new, opts.dry_run)
    }

    /// PATCH of an object or its status. Returns the object and whether it was created
    /// (server-side apply creates missing objects).
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        patch: PatchBody<'_>,
        target: Target,
        opts: &WriteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let PatchBody { kind, body } = patch;
        if kind == PatchKind::Apply {
            return self.apply(rt, ns, name, body, target, opts);
        }
        let old = self.lookup(rt, ns, name)?.clone();
        let mut doc = Self::present(rt, &old);
        apply_patch(kind, &mut doc, body, rt, name)?;
        if meta_str(&doc, "name") != Some(name) {
            return Err(ApiError::invalid(
                &rt.kind,
                subject(rt, name),
                "metadata.name: Invalid value: field is immutable",
            ));
        }
        // The patch was applied to the current object, so a resourceVersion other than
        // the current one in the result came from the patch: a stale precondition.
        Self::check_preconditions(rt, name, &old, &doc)?;
        Self::check_type_meta(rt, &mut doc)?;
        let new = Self::merge_target(rt, &old, doc, target);
        let key = ObjectKey {
            namespace: ns_key(rt, ns),
            name: name.into(),
        };
        Ok((self.commit_update(rt, &key, &old, new, opts.dry_run)?, false))
    }
}

/// Applies a merge, strategic (as merge) or JSON patch to a document.
pub(super) fn apply_patch(
    kind: PatchKind,
    doc: &mut Value,
    body: &[u8],
    rt: &ResourceType,
    name: &str,
) -> Result<(), ApiError> {
    match kind {
        PatchKind::Merge | PatchKind::Strategic => {
            let patch: Value =
                serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            if kind == PatchKind::Strategic && rt.crd.is_none() {
                patch::strategic_merge(doc, &patch);
            } else if kind == PatchKind::Strategic {
                // As the real server does: custom resources have no strategic merge schema.
                return Err(ApiError::unsupported_media_type(
                    "application/strategic-merge-patch+json",
                ));
            } else {
                json_patch::merge(doc, &patch);
            }
            Ok(())
        }
        PatchKind::Json => patch::json_patch(doc, body).map_err(|e| match e {
            JsonPatchError::Malformed(why) => ApiError::bad_request(why),
            JsonPatchError::Failed(why) => ApiError::invalid(&rt.kind, subject(rt, name), &why),
        }),
        PatchKind::Apply => Err(ApiError::unsupported_media_type("application/apply-patch+yaml")),
    }
}

/// Defaults the real server fills in on create that controllers read back.
pub(super) fn apply_defaults(rt: &ResourceType, obj: &mut Value, target: Target) {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Namespace") => {
            if target != Target::Raw || obj.get("status").is_none() {
                obj["status"] = json!({ "phase": "Active" });
            }
            if obj.pointer("/spec/finalizers").is_none() {
                set_path(obj, &["spec".into(), "finalizers".into()], json!(["kubernetes"]));
            }
        }
        ("", "Pod") if obj.get("status").is_none() => obj["status"] = json!({ "phase": "Pending" }),
        ("apps", "StatefulSet" | "Deployment" | "ReplicaSet") if obj.pointer("/spec/replicas").is_none() => {
            set_path(obj, &["spec".into(), "replicas".into()], json!(1));
        }
        _ => {}
    }
}

/// The status the apiextensions controller gives an accepted CRD.
pub(super) fn crd_status(crd: &Value, types: &[ResourceType]) -> Value {
    let now = now_timestamp();
    let storage = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .and_then(|v| v.get("name").cloned())
        .unwrap_or(json!(types.first().map(|t| t.version.clone()).unwrap_or_default()));
    json!({
        "acceptedNames": crd.pointer("/spec/names").cloned().unwrap_or(json!({})),
        "conditions": [
            { "type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
              "message": "no conflicts found", "lastTransitionTime": now },
            { "type": "Established", "status": "True", "reason": "InitialNamesAccepted",
              "message": "the initial names have been accepted", "lastTransitionTime": now },
        ],
        "storedVersions": [storage],
    })
}
