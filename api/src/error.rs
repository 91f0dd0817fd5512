//! The one error type of the API and the one place it becomes a response:
//! `{"error": {"code", "message", "field"?}}` with the right status. Internal
//! causes (SQL, runtime failures) are logged here and never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::backup::BackupError;
use crate::store::StoreError;

/// Every error a handler can return.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request could not be read (malformed JSON, bad query string).
    #[error("{message}")]
    BadRequest { code: &'static str, message: String, field: Option<String> },
    /// The request was well-formed but a value is not acceptable.
    #[error("{message}")]
    Invalid { code: &'static str, message: String, field: Option<String> },
    #[error("missing or invalid API token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    /// The object does not exist *or belongs to another tenant*: both give
    /// the same answer, so one tenant cannot detect another's objects.
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("{message}")]
    Conflict { code: &'static str, message: String, field: Option<String> },
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("request body must be JSON (content-type: application/json)")]
    UnsupportedMediaType,
    #[error("too many failed authentication attempts; retry later")]
    RateLimited { retry_after_s: u64 },
    /// The server runtime (local processes, Kubernetes) could not act now.
    #[error("the server runtime is unavailable")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Invalid { code: "invalid_field", message: message.into(), field: Some(field.into()) }
    }

    pub fn conflict(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Conflict { code, message: message.into(), field: Some(field.into()) }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } | ApiError::Invalid { code, .. } | ApiError::Conflict { code, .. } => {
                code
            }
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            ApiError::BadRequest { field, .. } | ApiError::Invalid { field, .. } | ApiError::Conflict { field, .. } => {
                field.as_deref()
            }
            _ => None,
        }
    }
}

/// Database errors are internal by default; the store modules turn the
/// expected ones (unique and foreign-key violations) into 409s themselves.
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        ApiError::Internal(anyhow::Error::new(e).context("database"))
    }
}

/// Store errors are internal, exactly as the SQL errors they carry: the
/// response says `internal error` and the cause is only logged.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Db(e) => ApiError::from(e),
            StoreError::Corrupt(message) => ApiError::Internal(anyhow::anyhow!(message)),
        }
    }
}

/// The backup service fails only in its store, so its errors answer as those.
impl From<BackupError> for ApiError {
    fn from(e: BackupError) -> ApiError {
        match e {
            BackupError::Store(e) => ApiError::from(e),
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `not_found`, `invalid_field`, `hostname_taken`, …
    pub code: String,
    /// For people; may change between versions.
    pub message: String,
    /// The request field at fault, as a path (`policy.max_replicas`, `hostnames[1]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(cause) => tracing::error!(error = ?cause, "request failed"),
            ApiError::Unavailable(cause) => tracing::warn!(error = %cause, "server runtime unavailable"),
            _ => {}
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.to_string(),
                field: self.field().map(str::to_owned),
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let ApiError::RateLimited { retry_after_s } = self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s.max(1)));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
