//! Path parameters in the API's own error shape. Axum's `Path<i64>` answers `/api/users/abc`
//! with a plain-text 400 and no field; [`IdPath`] answers with a validation error naming the
//! parameter (`id`, `instance_id`), like every other bad input.

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;

use super::error::WebError;

/// The integer id of a route such as `/api/users/{id}`: the route's only path parameter, or the
/// one named `id` when there are several. Ids are positive: SQLite row ids start at 1, so `0` or
/// `-3` can only be a client's mistake and is reported as one rather than as a 404.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdPath(pub i64);

impl<S> FromRequestParts<S> for IdPath
where
    S: Send + Sync,
{
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|rejection| {
                // Either the route has no parameters (a programming error) or a parameter is not
                // UTF-8 once percent-decoded (then it is not an integer either).
                if rejection.status().is_client_error() {
                    WebError::validation("id", "must be a positive integer")
                } else {
                    WebError::internal(anyhow::anyhow!(
                        "IdPath on a route without path parameters: {rejection}"
                    ))
                }
            })?;
        let params: Vec<(&str, &str)> = params.iter().collect();
        let (name, raw) = match params.as_slice() {
            [only] => *only,
            several => several
                .iter()
                .find(|(name, _)| *name == "id")
                .copied()
                .ok_or_else(|| {
                    WebError::internal(anyhow::anyhow!("IdPath on a route without an `id` parameter"))
                })?,
        };
        parse_id(raw)
            .map(IdPath)
            .ok_or_else(|| WebError::validation(name, "must be a positive integer"))
    }
}

/// A positive decimal integer that fits an `i64`; nothing else (no sign, no spaces).
fn parse_id(raw: &str) -> Option<i64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse::<i64>().ok().filter(|id| *id > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_positive_decimal_integers_are_ids() {
        assert_eq!(parse_id("1"), Some(1));
        assert_eq!(parse_id("0042"), Some(42));
        assert_eq!(parse_id(&i64::MAX.to_string()), Some(i64::MAX));
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            " 1",
            "1.0",
            "abc",
            "1e3",
            "99999999999999999999",
        ] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }
}
