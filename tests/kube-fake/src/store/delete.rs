//! Deleting: preconditions, finalizers, and what the cluster removes on its own
//! (a CRD's objects, a namespace's contents, an owner's dependents).

use super::*;

impl Store {
    /// DELETE of one object: removed at once, or marked with deletionTimestamp while
    /// finalizers remain.
    pub fn delete(&mut self, rt: &ResourceType, ns: &str, name: &str, opts: &DeleteOptions) -> Result<Value, ApiError> {
        let old = self.lookup(rt, ns, name)?.clone();
        let current_uid = meta_str(&old, "uid").unwrap_or_default();
        if let Some(uid) = &opts.uid
            && uid != current_uid
        {
            let why = format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {current_uid}");
            return Err(ApiError::conflict(subject(rt, name), &why));
        }
        if let Some(rv) = &opts.resource_version
            && Some(rv.as_str()) != rv_of(&old)
        {
            let why = format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                rv_of(&old).unwrap_or_default()
            );
            return Err(ApiError::conflict(subject(rt, name), &why));
        }
        if opts.dry_run {
            return Ok(Self::present(rt, &old));
        }
        let key = ObjectKey {
            namespace: ns_key(rt, ns),
            name: name.into(),
        };
        if !finalizers(&old).is_empty() {
            if meta_str(&old, "deletionTimestamp").is_some() {
                return Ok(Self::present(rt, &old));
            }
            let mut marked = old.clone();
            let meta = meta_mut(&mut marked);
            meta.insert("deletionTimestamp".into(), json!(now_timestamp()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            let rv = self.tick();
            meta_mut(&mut marked).insert("resourceVersion".into(), json!(rv.to_string()));
            self.objects
                .entry(rt.storage())
                .or_default()
                .insert(key.clone(), marked.clone());
            self.record(
                rt.storage(),
                key.namespace,
                ChangeKind::Modified,
                marked.clone(),
                Some(old),
            );
            return Ok(Self::present(rt, &marked));
        }
        let removed = self.remove_object(&rt.storage(), &key, opts.propagation);
        Ok(Self::present(rt, &removed))
    }

    /// DELETE of a collection: deletes every matching object, returns them as a list.
    pub fn delete_collection(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        labels_sel: &LabelSelector,
        fields: &FieldSelector,
        opts: &DeleteOptions,
    ) -> Result<Vec<Value>, ApiError> {
        let (items, _) = self.list(rt, ns, labels_sel, fields);
        let mut deleted = Vec::new();
        for item in items {
            let name = meta_str(&item, "name").unwrap_or_default().to_string();
            let item_ns = meta_str(&item, "namespace").unwrap_or_default().to_string();
            deleted.push(self.delete(rt, &item_ns, &name, opts)?);
        }
        Ok(deleted)
    }

    /// Takes an object out of storage (DELETED event), then cleans up what depended on
    /// it: a CRD's custom resources, a namespace's contents, an owner's dependents.
    pub(super) fn remove_object(&mut self, storage: &StorageKey, key: &ObjectKey, propagation: Propagation) -> Value {
        let Some(mut obj) = self.objects.get_mut(storage).and_then(|objs| objs.remove(key)) else {
            return Value::Null;
        };
        self.ownership.remove(&(storage.clone(), key.clone()));
        let rv = self.tick();
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        self.record(
            storage.clone(),
            key.namespace.clone(),
            ChangeKind::Deleted,
            obj.clone(),
            None,
        );
        self.after_write(storage);

        if storage.group.is_empty() && storage.plural == "namespaces" {
            let contained: Vec<(StorageKey, ObjectKey)> = self
                .objects
                .iter()
                .flat_map(|(s, objs)| {
                    objs.keys()
                        .filter(|k| k.namespace == key.name)
                        .map(move |k| (s.clone(), k.clone()))
                })
                .collect();
            for (s, k) in contained {
                self.delete_dependent(&s, &k, Propagation::Background);
            }
        }
        if let Some(uid) = meta_str(&obj, "uid").map(str::to_string) {
            self.collect_garbage(&uid, propagation);
        }
        obj
    }

    /// Deletes (or marks, with finalizers) an object the cluster removes on its own.
    pub(super) fn delete_dependent(&mut self, storage: &StorageKey, key: &ObjectKey, propagation: Propagation) {
        let Some(rt) = self.type_for_storage(storage) else {
            return;
        };
        let opts = DeleteOptions {
            propagation,
            ..DeleteOptions::default()
        };
        // The object exists (just listed); a failure here would only mean it is gone.
        let _ = self.delete(&rt, &key.namespace, &key.name, &opts);
    }

    /// The garbage collector, run synchronously: dependents whose owners are all gone are
    /// deleted; dependents with a surviving owner, or orphaned ones, lose the reference.
    pub(super) fn collect_garbage(&mut self, owner_uid: &str, propagation: Propagation) {
        let dependents: Vec<(StorageKey, ObjectKey)> = self
            .objects
            .iter()
            .flat_map(|(s, objs)| {
                objs.iter()
                    .filter(|(_, o)| owner_uids(o).iter().any(|u| u == owner_uid))
                    .map(move |(k, _)| (s.clone(), k.clone()))
            })
            .collect();
        if dependents.is_empty() {
            return;
        }
        let live: BTreeSet<String> = self
            .objects
            .values()
            .flat_map(|objs| objs.values())
            .filter_map(|o| meta_str(o, "uid"))
            .map(str::to_string)
            .collect();
        for (storage, key) in dependents {
            let Some(obj) = self.objects.get(&storage).and_then(|objs| objs.get(&key)).cloned() else {
                continue;
            };
            let orphaned = owner_uids(&obj).iter().all(|u| !live.contains(u));
            if orphaned && propagation == Propagation::Background {
                self.delete_dependent(&storage, &key, Propagation::Background);
                continue;
            }
            let Some(rt) = self.type_for_storage(&storage) else {
                continue;
            };
            let mut updated = obj.clone();
            if let Some(refs) = updated
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
            }
            let _ = self.commit_update(&rt, &key, &obj, updated, false);
        }
    }

    /// Keeps the served custom resources in step with the stored CRDs.
    pub(super) fn after_write(&mut self, storage: &StorageKey) {
        if storage.group != "apiextensions.k8s.io" || storage.plural != "customresourcedefinitions" {
            return;
        }
        let custom: Vec<ResourceType> = self
            .objects
            .get(storage)
            .into_iter()
            .flat_map(|crds| crds.values())
            .filter_map(|crd| types_from_crd(crd).ok())
            .flatten()
            .collect();
        let served: BTreeSet<StorageKey> = custom.iter().map(ResourceType::storage).collect();
        let gone: Vec<StorageKey> = self
            .custom
            .iter()
            .map(ResourceType::storage)
            .filter(|s| !served.contains(s))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for storage in gone {
            // Deleting a CRD deletes its custom resources (finalizers are not waited for).
            let objs = self.objects.remove(&storage).unwrap_or_default();
            for (key, mut obj) in objs {
                self.ownership.remove(&(storage.clone(), key.clone()));
                let rv = self.tick();
                meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
                self.record(storage.clone(), key.namespace, ChangeKind::Deleted, obj, None);
            }
        }
        self.custom = custom;
    }
}
