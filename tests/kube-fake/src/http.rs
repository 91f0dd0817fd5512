//! The HTTP face: one handler that logs the request, applies an injected failure, routes
//! the path and turns every error into a `Status` response in one place.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, RecordedRequest};
use crate::discovery;
use crate::error::ApiError;
use crate::patch::PatchKind;
use crate::resources::ResourceType;
use crate::route::{self, ObjectPath, Route};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{DeleteOptions, PatchBody, Propagation, Target, WatchFilter, WriteOptions};
use crate::watch::{self, WatchStyle};

#[derive(Clone)]
struct App {
    cluster: Cluster,
    shutdown: CancellationToken,
}

/// The router of the whole API; `shutdown` also ends open watches.
pub fn router(cluster: Cluster, shutdown: CancellationToken) -> Router {
    Router::new().fallback(handle).with_state(App { cluster, shutdown })
}

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, cluster: Cluster, shutdown: CancellationToken) -> std::io::Result<()> {
    let app = router(cluster, shutdown.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// The query string, decoded.
struct Query(HashMap<String, String>);

impl Query {
    fn parse(raw: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    let mut response = (code, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error_response(error: &ApiError) -> Response {
    let code = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &error.to_status())
}

async fn handle(State(app): State<App>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let query = Query::parse(uri.query());
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    app.cluster.record(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        content_type: content_type.clone(),
    });
    if let Some(code) = app.cluster.take_fault(method.as_str(), uri.path(), query.flag("watch")) {
        tracing::debug!(%method, path = uri.path(), code, "injected failure");
        return error_response(&ApiError::injected(code));
    }
    let request = Request {
        method: &method,
        query: &query,
        headers: &headers,
        content_type: content_type.as_deref(),
        body: &body,
    };
    match dispatch(&app, uri.path(), &request) {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%method, path = uri.path(), code = error.code, reason = %error.reason, "request failed");
            error_response(&error)
        }
    }
}

/// The parts of a request the API needs.
struct Request<'a> {
    method: &'a Method,
    query: &'a Query,
    headers: &'a HeaderMap,
    content_type: Option<&'a str>,
    body: &'a Bytes,
}

impl Request<'_> {
    /// `Accept: application/json;as=PartialObjectMetadata…` (kube's metadata API).
    fn metadata_only(&self) -> bool {
        self.headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("as=PartialObjectMetadata"))
    }

    fn body_json(&self) -> Result<Value, ApiError> {
        // Only JSON and YAML bodies are understood. A protobuf or CBOR body gets the 415 a
        // server without that codec gives; client-go (kubectl) then retries in JSON.
        if let Some(ct) = self.content_type
            && !ct.contains("json")
            && !ct.contains("yaml")
        {
            return Err(ApiError::unsupported_media_type(ct));
        }
        let parsed = if self.content_type.is_some_and(|ct| ct.contains("yaml")) {
            serde_yaml::from_slice(self.body).map_err(|e| e.to_string())
        } else {
            serde_json::from_slice(self.body).map_err(|e| e.to_string())
        };
        parsed.map_err(|e| ApiError::bad_request(format!("the request body could not be decoded: {e}")))
    }

    fn write_options(&self) -> WriteOptions {
        WriteOptions {
            dry_run: self.query.get("dryRun") == Some("All"),
            field_manager: self.query.get("fieldManager").map(str::to_string),
            force: self.query.flag("force"),
        }
    }

    fn delete_options(&self) -> Result<DeleteOptions, ApiError> {
        let body: Value = if self.body.is_empty() {
            json!({})
        } else {
            self.body_json()?
        };
        let policy = body
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .or(self.query.get("propagationPolicy"));
        let orphan = policy == Some("Orphan") || body.get("orphanDependents").and_then(Value::as_bool) == Some(true);
        let dry_run = body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|v| v == "All"))
            || self.query.get("dryRun") == Some("All");
        let precondition = |field: &str| {
            body.pointer(&format!("/preconditions/{field}"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Ok(DeleteOptions {
            resource_version: precondition("resourceVersion"),
            uid: precondition("uid"),
            propagation: if orphan {
                Propagation::Orphan
            } else {
                Propagation::Background
            },
            dry_run,
        })
    }

    fn patch(&self) -> Result<PatchBody<'_>, ApiError> {
        let content_type = self.content_type.unwrap_or_default();
        let kind =
            PatchKind::from_content_type(content_type).ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
        Ok(PatchBody { kind, body: self.body })
    }

    fn selectors(&self, rt: &ResourceType) -> Result<(LabelSelector, FieldSelector), ApiError> {
        let labels =
            LabelSelector::parse(self.query.get("labelSelector").unwrap_or_default()).map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(
            self.query.get("fieldSelector").unwrap_or_default(),
            &rt.selectable_fields,
        )
        .map_err(ApiError::bad_request)?;
        Ok((labels, fields))
    }
}

fn dispatch(app: &App, path: &str, req: &Request<'_>) -> Result<Response, ApiError> {
    let route = route::parse(path).ok_or_else(ApiError::no_such_resource)?;
    if !matches!(route, Route::Object(_)) && *req.method != Method::GET {
        return Err(ApiError::method_not_allowed());
    }
    let ok = |doc: Value| Ok(json_response(StatusCode::OK, &doc));
    let types = || -> Vec<ResourceType> { app.cluster.store().types().cloned().collect() };
    match route {
        Route::Health => Ok((StatusCode::OK, "ok").into_response()),
        Route::Version => ok(discovery::version()),
        Route::CoreVersions => {
            let host = req
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1");
            ok(discovery::core_versions(host))
        }
        Route::Groups => ok(discovery::groups(&types())),
        Route::Group(group) => discovery::group(&types(), &group).map_or_else(|| Err(ApiError::no_such_resource()), ok),
        Route::Resources { group, version } => {
            discovery::resources(&types(), &group, &version).map_or_else(|| Err(ApiError::no_such_resource()), ok)
        }
        Route::Object(object) => serve_object(app, &object, req),
    }
}

/// Renders an object for the response (metadata only, when asked).
fn render(rt: &ResourceType, req: &Request<'_>, obj: &Value) -> Value {
    watch::render_object(rt, req.metadata_only(), obj)
}

fn serve_object(app: &App, path: &ObjectPath, req: &Request<'_>) -> Result<Response, ApiError> {
    let rt = app.cluster.store().resolve(&path.group, &path.version, &path.plural)?;
    // A namespaced resource has no objects outside namespaces, a cluster-scoped one none
    // inside: such paths do not exist.
    if (!rt.namespaced && path.namespace.is_some())
        || (rt.namespaced && path.namespace.is_none() && path.name.is_some())
    {
        return Err(ApiError::no_such_resource());
    }
    let ns = path.namespace.clone().unwrap_or_default();
    let opts = req.write_options();
    let ok = |code: StatusCode, obj: &Value| Ok(json_response(code, &render(&rt, req, obj)));
    let method = req.method.clone();

    let Some(name) = path.name.as_deref() else {
        return match method {
            Method::GET if req.query.flag("watch") => start_watch(app, &rt, path.namespace.clone(), None, req),
            Method::GET => {
                let (labels, fields) = req.selectors(&rt)?;
                let (items, rv) = app
                    .cluster
                    .store()
                    .list(&rt, path.namespace.as_deref(), &labels, &fields);
                Ok(json_response(StatusCode::OK, &list_document(&rt, req, items, rv)))
            }
            Method::POST if path.namespace.is_none() && rt.namespaced => Err(ApiError::method_not_allowed()),
            Method::POST => {
                let body = req.body_json()?;
                let created = app.cluster.store().create(&rt, &ns, body, &opts)?;
                ok(StatusCode::CREATED, &created)
            }
            Method::DELETE => {
                let (labels, fields) = req.selectors(&rt)?;
                let delete = req.delete_options()?;
                let items =
                    app.cluster
                        .store()
                        .delete_collection(&rt, path.namespace.as_deref(), &labels, &fields, &delete)?;
                let rv = app.cluster.resource_version();
                Ok(json_response(StatusCode::OK, &list_document(&rt, req, items, rv)))
            }
            _ => Err(ApiError::method_not_allowed()),
        };
    };

    match path.subresource.as_deref() {
        None => match method {
            Method::GET if req.query.flag("watch") => start_watch(app, &rt, path.namespace.clone(), Some(name), req),
            Method::GET => ok(StatusCode::OK, &app.cluster.store().get(&rt, &ns, name)?),
            Method::PUT => ok(
                StatusCode::OK,
                &app.cluster
                    .store()
                    .replace(&rt, &ns, name, req.body_json()?, Target::Main, &opts)?,
            ),
            Method::PATCH => {
                let (obj, created) = app
                    .cluster
                    .store()
                    .patch(&rt, &ns, name, req.patch()?, Target::Main, &opts)?;
                ok(if created { StatusCode::CREATED } else { StatusCode::OK }, &obj)
            }
            Method::DELETE => ok(
                StatusCode::OK,
                &app.cluster.store().delete(&rt, &ns, name, &req.delete_options()?)?,
            ),
            _ => Err(ApiError::method_not_allowed()),
        },
        Some("status") if rt.status_subresource => match method {
            Method::GET => ok(StatusCode::OK, &app.cluster.store().get(&rt, &ns, name)?),
            Method::PUT => ok(
                StatusCode::OK,
                &app.cluster
                    .store()
                    .replace(&rt, &ns, name, req.body_json()?, Target::Status, &opts)?,
            ),
            Method::PATCH => {
                let (obj, _) = app
                    .cluster
                    .store()
                    .patch(&rt, &ns, name, req.patch()?, Target::Status, &opts)?;
                ok(StatusCode::OK, &obj)
            }
            _ => Err(ApiError::method_not_allowed()),
        },
        Some("scale") if rt.scale.is_some() => {
            let scale = match method {
                Method::GET => app.cluster.store().get_scale(&rt, &ns, name)?,
                Method::PUT => app
                    .cluster
                    .store()
                    .replace_scale(&rt, &ns, name, req.body_json()?, &opts)?,
                Method::PATCH => app.cluster.store().patch_scale(&rt, &ns, name, req.patch()?, &opts)?,
                _ => return Err(ApiError::method_not_allowed()),
            };
            Ok(json_response(StatusCode::OK, &scale))
        }
        Some("log") if rt.group.is_empty() && rt.plural == "pods" => match method {
            Method::GET => pod_log(app, &rt, &ns, name, req.query),
            _ => Err(ApiError::method_not_allowed()),
        },
        Some(_) => Err(ApiError::no_such_resource()),
    }
}

/// `GET …/pods/{name}/log`: the lines `append_pod_log` recorded, as plain text, with
/// `sinceTime`, `tailLines` and `timestamps` applied like the kubelet does. `container`,
/// `follow` and the other options are not emulated.
fn pod_log(app: &App, rt: &ResourceType, ns: &str, name: &str, query: &Query) -> Result<Response, ApiError> {
    app.cluster.store().get(rt, ns, name)?;
    let since = match query.get("sinceTime") {
        Some(raw) => Some(
            raw.parse::<jiff::Timestamp>()
                .map_err(|e| ApiError::bad_request(format!("sinceTime: {e}")))?,
        ),
        None => None,
    };
    let mut lines = app.cluster.pod_log(ns, name);
    lines.retain(|l| since.is_none_or(|t| l.at >= t));
    if let Some(raw) = query.get("tailLines") {
        let tail: usize = raw
            .parse()
            .map_err(|_| ApiError::bad_request(format!("tailLines: invalid value {raw:?}")))?;
        lines.drain(..lines.len().saturating_sub(tail));
    }
    let timestamps = query.flag("timestamps");
    let text: String = lines
        .iter()
        .map(|l| {
            if timestamps {
                format!("{} {}\n", l.at, l.text)
            } else {
                format!("{}\n", l.text)
            }
        })
        .collect();
    let mut response = (StatusCode::OK, text).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(response)
}

fn list_document(rt: &ResourceType, req: &Request<'_>, items: Vec<Value>, rv: u64) -> Value {
    let (api_version, kind) = if req.metadata_only() {
        ("meta.k8s.io/v1".to_string(), "PartialObjectMetadataList".to_string())
    } else {
        (rt.api_version(), rt.list_kind.clone())
    };
    let items: Vec<Value> = items.iter().map(|obj| render(rt, req, obj)).collect();
    json!({ "apiVersion": api_version, "kind": kind, "metadata": { "resourceVersion": rv.to_string() }, "items": items })
}

fn start_watch(
    app: &App,
    rt: &ResourceType,
    namespace: Option<String>,
    name: Option<&str>,
    req: &Request<'_>,
) -> Result<Response, ApiError> {
    let q = req.query;
    let send_initial_events = q.flag("sendInitialEvents");
    let bookmarks = q.flag("allowWatchBookmarks");
    let invalid = |why: &str| {
        ApiError::invalid(
            "ListOptions",
            crate::error::Subject {
                group: "meta.k8s.io",
                plural: "listoptions",
                name: "",
            },
            why,
        )
    };
    match (send_initial_events, q.get("resourceVersionMatch")) {
        (false, Some(m)) if !m.is_empty() => {
            return Err(invalid(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        (true, m) if m != Some("NotOlderThan") => {
            return Err(invalid(&format!(
                "resourceVersionMatch: Unsupported value: {:?}: supported values: \"NotOlderThan\"",
                m.unwrap_or_default()
            )));
        }
        (true, _) if !bookmarks => {
            return Err(invalid(
                "allowWatchBookmarks: Required value: allowWatchBookmarks must be set to true when sendInitialEvents is provided",
            ));
        }
        _ => {}
    }
    let from = match q.get("resourceVersion").unwrap_or_default() {
        "" | "0" => None,
        rv => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?,
        ),
    };
    let timeout = match q.get("timeoutSeconds") {
        Some(secs) => Duration::from_secs(
            secs.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {secs:?}")))?,
        ),
        None => app.cluster.options().default_watch_timeout,
    };
    let (labels, mut fields) = req.selectors(rt)?;
    if let Some(name) = name {
        fields = fields.and(FieldSelector::name(name));
    }
    let filter = WatchFilter {
        storage: rt.storage(),
        namespace,
        labels,
        fields,
    };
    let start = app.cluster.store().watch(&filter, from, send_initial_events);
    let style = WatchStyle {
        rt: rt.clone(),
        metadata_only: req.metadata_only(),
        bookmarks,
        initial_events_end: send_initial_events,
        timeout,
        bookmark_interval: app.cluster.options().bookmark_interval,
    };
    let body = Body::from_stream(watch::stream(start, filter, style, app.shutdown.clone()));
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}
