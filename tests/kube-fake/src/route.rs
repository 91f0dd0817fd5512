//! Parses an API path into what it addresses, without knowing which resources exist.

/// What a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/version`
    Version,
    /// `/healthz`, `/livez`, `/readyz`
    Health,
    /// `/api`: the core group's versions.
    CoreVersions,
    /// `/apis`: every group.
    Groups,
    /// `/apis/{group}`
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`: the resources of one group version.
    Resources { group: String, version: String },
    /// A collection, an object or a subresource.
    Object(ObjectPath),
}

/// A path below a group version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPath {
    /// API group, empty for the core group.
    pub group: String,
    /// API version.
    pub version: String,
    /// Namespace from `/namespaces/{ns}/…`; `None` for cluster-wide paths.
    pub namespace: Option<String>,
    /// Plural resource name.
    pub plural: String,
    /// Object name, `None` for a collection.
    pub name: Option<String>,
    /// Subresource (`status`, `scale`).
    pub subresource: Option<String>,
}

/// Parses the path part of a request URI; `None` when it addresses nothing the API has.
pub fn parse(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return Some(Route::Version),
        ["healthz" | "livez" | "readyz", ..] => return Some(Route::Health),
        ["api"] => return Some(Route::CoreVersions),
        ["apis"] => return Some(Route::Groups),
        ["apis", group] => return Some(Route::Group((*group).to_string())),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let object = |namespace: Option<&str>, plural: &str, name: Option<&str>, subresource: Option<&str>| {
        Some(Route::Object(ObjectPath {
            group: group.to_string(),
            version: version.to_string(),
            namespace: namespace.map(str::to_string),
            plural: plural.to_string(),
            name: name.map(str::to_string),
            subresource: subresource.map(str::to_string),
        }))
    };
    match rest {
        [] => Some(Route::Resources {
            group: group.to_string(),
            version: version.to_string(),
        }),
        // A namespace's own subresources look like a namespaced collection: the real
        // server resolves `/namespaces/{name}/status` to the namespace's status.
        ["namespaces", name, sub @ ("status" | "finalize")] if group.is_empty() => {
            object(None, "namespaces", Some(name), Some(sub))
        }
        ["namespaces", ns, plural] => object(Some(ns), plural, None, None),
        ["namespaces", ns, plural, name] => object(Some(ns), plural, Some(name), None),
        ["namespaces", ns, plural, name, sub] => object(Some(ns), plural, Some(name), Some(sub)),
        [plural] => object(None, plural, None, None),
        [plural, name] => object(None, plural, Some(name), None),
        [plural, name, sub] => object(None, plural, Some(name), Some(sub)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(path: &str) -> ObjectPath {
        match parse(path) {
            Some(Route::Object(p)) => p,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn namespaced_paths() {
        let p = obj("/apis/apps/v1/namespaces/games/statefulsets/mc/scale");
        assert_eq!((p.group.as_str(), p.version.as_str()), ("apps", "v1"));
        assert_eq!(p.namespace.as_deref(), Some("games"));
        assert_eq!(
            (p.plural.as_str(), p.name.as_deref(), p.subresource.as_deref()),
            ("statefulsets", Some("mc"), Some("scale"))
        );
        let list = obj("/api/v1/namespaces/default/pods");
        assert_eq!((list.group.as_str(), list.name), ("", None));
    }

    #[test]
    fn cluster_and_all_namespace_paths() {
        let ns = obj("/api/v1/namespaces/games");
        assert_eq!(
            (ns.plural.as_str(), ns.name.as_deref(), ns.namespace),
            ("namespaces", Some("games"), None)
        );
        let status = obj("/api/v1/namespaces/games/status");
        assert_eq!(
            (status.plural.as_str(), status.subresource.as_deref()),
            ("namespaces", Some("status"))
        );
        let all = obj("/api/v1/pods");
        assert_eq!((all.plural.as_str(), all.namespace), ("pods", None));
        let crd = obj("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com");
        assert_eq!(crd.name.as_deref(), Some("widgets.example.com"));
    }

    #[test]
    fn discovery_and_unknown_paths() {
        assert_eq!(parse("/version"), Some(Route::Version));
        assert_eq!(parse("/api"), Some(Route::CoreVersions));
        assert_eq!(parse("/apis/"), Some(Route::Groups));
        assert_eq!(
            parse("/apis/apps/v1"),
            Some(Route::Resources {
                group: "apps".into(),
                version: "v1".into()
            })
        );
        assert_eq!(parse("/metrics"), None);
        assert_eq!(parse("/api/v1/namespaces/a/pods/b/c/d"), None);
    }
}
