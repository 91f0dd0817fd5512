//! Failures as the API server reports them: every one becomes a `kind: Status` object.
//!
//! The reasons and messages follow apimachinery's `errors` package, because client code
//! (kube's `Status::is_not_found`, `is_conflict`, …) branches on `reason` and `code`.

use serde_json::{Value, json};

/// One failed request, rendered as a `Status` with the matching HTTP code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} ({code}): {message}")]
pub struct ApiError {
    /// HTTP status code, also carried in the Status body.
    pub code: u16,
    /// Machine-readable reason (`NotFound`, `Conflict`, …).
    pub reason: String,
    /// Human-readable message, worded like the real server's.
    pub message: String,
    /// `details` of the Status (name, group, kind = the resource's plural).
    pub details: Option<Value>,
}

/// What a Status names when it is about one object of one resource.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// API group, empty for the core group.
    pub group: &'a str,
    /// Plural resource name (`pods`).
    pub plural: &'a str,
    /// Object name.
    pub name: &'a str,
}

impl Subject<'_> {
    /// `pods` for the core group, `statefulsets.apps` otherwise, as the server words it.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn details(&self) -> Value {
        let mut details = json!({ "name": self.name, "kind": self.plural });
        if !self.group.is_empty() {
            details["group"] = json!(self.group);
        }
        details
    }
}

impl ApiError {
    /// An error with a code and reason but no details.
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.to_string(),
            message: message.into(),
            details: None,
        }
    }

    /// 404 for a missing object.
    pub fn not_found(subject: Subject<'_>) -> Self {
        Self {
            details: Some(subject.details()),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{}\" not found", subject.qualified(), subject.name),
            )
        }
    }

    /// 404 for a path no resource is served at (what a real server answers before a CRD
    /// registers the resource).
    pub fn no_such_resource() -> Self {
        Self {
            details: Some(json!({})),
            ..Self::new(404, "NotFound", "the server could not find the requested resource")
        }
    }

    /// 409 for a create whose name is taken.
    pub fn already_exists(subject: Subject<'_>) -> Self {
        Self {
            details: Some(subject.details()),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} \"{}\" already exists", subject.qualified(), subject.name),
            )
        }
    }

    /// 409 for a write whose resourceVersion (or uid) precondition is stale.
    pub fn conflict(subject: Subject<'_>, why: &str) -> Self {
        Self {
            details: Some(subject.details()),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": {why}",
                    subject.qualified(),
                    subject.name
                ),
            )
        }
    }

    /// The message a stale resourceVersion gets.
    pub const MODIFIED: &'static str =
        "the object has been modified; please apply your changes to the latest version and try again";

    /// 422 for an object that fails validation.
    pub fn invalid(kind: &str, subject: Subject<'_>, why: &str) -> Self {
        Self {
            details: Some(json!({ "name": subject.name, "group": subject.group, "kind": kind })),
            ..Self::new(422, "Invalid", format!("{kind} \"{}\" is invalid: {why}", subject.name))
        }
    }

    /// 400 for a request the server cannot make sense of.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 405 for a verb the path does not take.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 415 for a PATCH in a content type the server does not know.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format: {content_type}"),
        )
    }

    /// 410 for a watch from a resourceVersion the event history no longer holds.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// An injected failure: the reason the real server pairs with that code.
    pub fn injected(code: u16) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            410 => "Gone",
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        };
        Self::new(code, reason, format!("injected failure ({reason})"))
    }

    /// The `kind: Status` body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// Failures of the fake's own controls (not of an emulated request).
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    /// The listener could not be bound.
    #[error("cannot listen: {0}")]
    Bind(#[from] std::io::Error),
    /// The server URL could not be turned into a client configuration.
    #[error("cannot build a kube client: {0}")]
    Client(String),
}
