//! Request extractors that answer bad input in the API's own error shape. Axum's stock `Json`
//! and `Query` reply with plain text and no field; these name the field that failed
//! (`container.port`, `name`) so a client can show the error next to it.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::{ErrorCode, WebError};

/// A JSON body, deserialized with the path of any failing field.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = WebError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let ct = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
                ct == "application/json" || (ct.starts_with("application/") && ct.ends_with("+json"))
            });
        if !is_json {
            return Err(WebError {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ..WebError::bad_request("expected a JSON body with Content-Type: application/json")
            });
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                WebError {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    ..WebError::bad_request("the request body is larger than 1 MiB")
                }
            } else {
                WebError::bad_request(format!("could not read the request body: {rejection}"))
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Deserializes JSON, naming the failing field in the error. Every body the API takes is a JSON
/// object: anything else that is valid JSON is refused here, before serde could read an array
/// as a struct's fields in order (`[null, null]` as a patch that changes nothing).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WebError> {
    if let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace())
        && matches!(first, b'[' | b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9')
    {
        return Err(WebError::bad_request(
            "the body must be a JSON object, like {\"name\": \"...\"}",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        if inner.is_syntax() || inner.is_eof() {
            return WebError::bad_request(format!("the body is not valid JSON: {message}"));
        }
        let field = field_of(&path, &message);
        match field {
            Some(field) => WebError::validation(field, clean_message(&message)),
            None => WebError::bad_request(clean_message(&message)),
        }
    })?;
    de.end()
        .map_err(|e| WebError::bad_request(format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

/// Query parameters, with the failing parameter named.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(ApiQuery).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            match field_of(&path, &message) {
                Some(field) => WebError::validation(field, clean_message(&message)),
                None => WebError::bad_request(clean_message(&message)),
            }
        })
    }
}

/// The field a deserialization error is about: the path when there is one, else the name serde
/// quotes in "missing field `x`" / "unknown field `x`".
fn field_of(path: &str, message: &str) -> Option<String> {
    let quoted = message
        .split('`')
        .nth(1)
        .filter(|_| message.starts_with("missing field"));
    let path = path.trim_start_matches('.');
    let path = (!path.is_empty() && path != "?").then_some(path);
    match (path, quoted) {
        (Some(p), Some(q)) => Some(format!("{p}.{q}")),
        (Some(p), None) => Some(p.to_owned()),
        (None, Some(q)) => Some(q.to_owned()),
        (None, None) => None,
    }
}

/// Drops serde's " at line 1 column 7" suffix, which means nothing to an API user.
fn clean_message(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validation => "validation",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        container: Inner,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        port: u16,
    }

    #[test]
    fn a_wrong_type_names_the_nested_field() {
        let err = parse_json::<Body>(br#"{"name":"a","container":{"port":"x"}}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("container.port"));
    }

    #[test]
    fn missing_and_unknown_fields_are_named() {
        let err = parse_json::<Body>(br#"{"container":{"port":1}}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("name"));
        let err = parse_json::<Body>(br#"{"name":"a","container":{"port":1,"colour":2}}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("container.colour"));
    }

    #[test]
    fn malformed_json_is_a_bad_request_without_a_field() {
        let err = parse_json::<Body>(b"{not json").unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.field, None);
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Patch {
        role: Option<String>,
        password: Option<String>,
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused_even_when_serde_would_read_it() {
        for body in [
            "[null, null]",
            " [\"admin\"]",
            "\"x\"",
            "true",
            "null",
            "42",
            "-1",
        ] {
            let err = parse_json::<Patch>(body.as_bytes()).expect_err(body);
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{body}");
            assert!(err.message.contains("JSON object"), "{body}: {}", err.message);
        }
        assert!(parse_json::<Patch>(b" {\"role\": null}").is_ok());
        let err = parse_json::<Patch>(b"").unwrap_err();
        assert!(err.message.contains("not valid JSON"), "{}", err.message);
    }
}
