//! Request extractors that fail with [`ApiError`] instead of axum's plain-text
//! rejections, and name the field at fault (`policy.max_replicas`,
//! `hostnames[2]`) using `serde_path_to_error`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body. Syntax errors are 400 `invalid_json`; a wrong type, a missing
/// field or an unknown field is 422 `invalid_field` with the field's path.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(&req) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A JSON body that may be left out: an empty body is `T::default()`; a
/// non-empty one is parsed like [`ApiJson`].
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = is_json(&req);
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        if bytes.is_empty() {
            return Ok(OptionalJson(T::default()));
        }
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        parse_json(&bytes).map(OptionalJson)
    }
}

fn is_json(req: &Request) -> bool {
    let Some(value) = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

fn body_error(rejection: BytesRejection) -> ApiError {
    // The only sizable rejection is the body limit (DefaultBodyLimit); its
    // status is 413. Anything else is a broken upload.
    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge
    } else {
        ApiError::BadRequest { code: "invalid_body", message: "the request body could not be read".into(), field: None }
    }
}

/// Parses a JSON document into `T`, naming the failing field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            let message = inner.to_string();
            let field = field_path(&path, &message);
            ApiError::Invalid { code: "invalid_field", message: strip_position(&message), field }
        } else {
            ApiError::BadRequest { code: "invalid_json", message: format!("malformed JSON: {inner}"), field: None }
        }
    })?;
    de.end().map_err(|e| ApiError::BadRequest {
        code: "invalid_json",
        message: format!("malformed JSON: {e}"),
        field: None,
    })?;
    Ok(value)
}

/// The field a serde error is about: the path where it happened, plus the
/// field's own name for `unknown field` / `missing field` errors (serde
/// reports those at the enclosing object).
fn field_path(path: &str, message: &str) -> Option<String> {
    let parent = if path == "." { "" } else { path };
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix).and_then(|rest| rest.split('`').next()));
    match (parent, named) {
        ("", None) => None,
        ("", Some(name)) => Some(name.to_owned()),
        (parent, Some(name)) if !parent.ends_with(name) => Some(format!("{parent}.{name}")),
        (parent, _) => Some(parent.to_owned()),
    }
}

/// serde_json appends " at line 1 column 42"; useless to API clients once the
/// field is named.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// A query string. Any error is 400 `invalid_query` naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(ApiQuery).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            ApiError::BadRequest { code: "invalid_query", field: field_path(&path, &message), message }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Option<Inner>,
        list: Option<Vec<u32>>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    fn field_of(json: &str) -> (u16, Option<String>) {
        match parse_json::<Outer>(json.as_bytes()) {
            Ok(_) => (200, None),
            Err(e) => {
                let field = match &e {
                    ApiError::Invalid { field, .. } | ApiError::BadRequest { field, .. } => field.clone(),
                    _ => None,
                };
                (e.status().as_u16(), field)
            }
        }
    }

    #[test]
    fn names_the_field() {
        assert_eq!(field_of(r#"{"name":"a"}"#), (200, None));
        assert_eq!(field_of(r#"{"name":"a","bogus":1}"#), (422, Some("bogus".into())));
        assert_eq!(field_of(r#"{"name":"a","inner":{"n":1,"x":2}}"#), (422, Some("inner.x".into())));
        assert_eq!(field_of(r#"{"name":"a","inner":{}}"#), (422, Some("inner.n".into())));
        assert_eq!(field_of(r#"{"name":"a","inner":{"n":"one"}}"#), (422, Some("inner.n".into())));
        assert_eq!(field_of(r#"{"name":"a","list":[1,"x"]}"#), (422, Some("list[1]".into())));
        assert_eq!(field_of(r#"{}"#), (422, Some("name".into())));
        assert_eq!(field_of(r#"{"name":5}"#), (422, Some("name".into())));
        assert_eq!(field_of(r#"{"name":"a""#).0, 400);
        assert_eq!(field_of(r#"{"name":"a"} trailing"#).0, 400);
    }
}
