//! The response headers the registry client reads beyond the body: `Link` (RFC 8288, formerly
//! RFC 5988) for tag-list pagination, `Retry-After` (RFC 9110 §10.2.3) on a 429, and Docker Hub's
//! `RateLimit-Remaining`. Each is a pure function of header text, so each edge case is a unit
//! test.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

/// The target of the first `rel="next"` link in the given `Link` header values, as written
/// (possibly relative: the caller resolves it against the request URL).
pub(crate) fn next_link<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<String> {
    values.into_iter().find_map(next_link_in)
}

fn next_link_in(value: &str) -> Option<String> {
    let mut rest = value;
    loop {
        // Each link-value is `<target>` followed by `; param` parts up to a comma outside quotes;
        // the target itself may contain commas, so it is cut at `>`, not at a comma.
        let open = rest.find('<')?;
        let close = open + rest[open..].find('>')?;
        let target = rest[open + 1..close].trim();
        rest = &rest[close + 1..];
        let params_end = end_of_link_params(rest);
        let params = &rest[..params_end];
        rest = &rest[params_end..];
        if rel_is_next(params) {
            return Some(target.to_owned());
        }
    }
}

/// The index of the first comma outside a quoted string (or the end): where a link's parameters
/// stop and the next link starts.
fn end_of_link_params(text: &str) -> usize {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => return i,
            _ => {}
        }
    }
    text.len()
}

/// Whether `; rel="next"` (or `rel=next`, or a space-separated list of relation types including
/// `next`) is among a link's parameters.
fn rel_is_next(params: &str) -> bool {
    params.split(';').any(|param| {
        let Some((name, value)) = param.split_once('=') else {
            return false;
        };
        name.trim().eq_ignore_ascii_case("rel")
            && value
                .trim()
                .trim_matches('"')
                .split_ascii_whitespace()
                .any(|rel| rel.eq_ignore_ascii_case("next"))
    })
}

/// The delay a `Retry-After` value asks for: delay-seconds (`120`) or an HTTP date. A date is
/// measured from the response's own `Date` header when there is one, so that a skewed local
/// clock does not stretch or shrink the wait, and from `now` otherwise. A date in the past means
/// "now": zero. `None` when the value is unreadable.
pub(crate) fn retry_after(value: &str, response_date: Option<&str>, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is nonsense; treat it as unreadable rather than wrapping.
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let until = parse_http_date(value)?;
    let from = response_date.and_then(parse_http_date).unwrap_or(now);
    Some((until - from).to_std().unwrap_or(Duration::ZERO))
}

/// An HTTP date in any of the three formats RFC 9110 §5.6.7 says recipients must accept:
/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`)
/// and asctime (`Sun Nov  6 08:49:37 1994`).
fn parse_http_date(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    if let Ok(date) = DateTime::parse_from_rfc2822(value) {
        return Some(date.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDateTime::parse_from_str(value, "%A, %d-%b-%y %H:%M:%S GMT") {
        return Some(date.and_utc());
    }
    NaiveDateTime::parse_from_str(value, "%a %b %e %H:%M:%S %Y")
        .ok()
        .map(|date| date.and_utc())
}

/// The request budget left, from `RateLimit-Remaining`: a plain number, or Docker Hub's
/// `76;w=21600` (remaining; window in seconds).
pub(crate) fn rate_limit_remaining(value: &str) -> Option<u64> {
    value.split([';', ',']).next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("a valid test date")
            .with_timezone(&Utc)
    }

    #[test]
    fn the_next_link_is_found_relative_or_absolute() {
        assert_eq!(
            next_link([r#"</v2/a/tags/list?n=2&last=b>; rel="next""#]).as_deref(),
            Some("/v2/a/tags/list?n=2&last=b")
        );
        assert_eq!(
            next_link(["<https://r.example/v2/a/tags/list?last=b>;rel=next"]).as_deref(),
            Some("https://r.example/v2/a/tags/list?last=b")
        );
    }

    #[test]
    fn only_the_next_relation_counts_among_several_links() {
        let header = r#"</p1>; rel="prev"; title="a, b", </p3>; rel="next", </p9>; rel="last""#;
        assert_eq!(next_link([header]).as_deref(), Some("/p3"));
        assert_eq!(
            next_link([r#"</x>; rel="prev""#, r#"</y>; REL="Next""#]).as_deref(),
            Some("/y")
        );
        assert_eq!(next_link([r#"</z>; rel="last next""#]).as_deref(), Some("/z"));
        assert_eq!(next_link([r#"</a,b>; rel="next""#]).as_deref(), Some("/a,b"));
    }

    #[test]
    fn no_next_link_is_found_where_there_is_none() {
        assert_eq!(next_link([r#"</p1>; rel="prev""#]), None);
        assert_eq!(next_link(["", "garbage", "<unterminated; rel=next"]), None);
        assert_eq!(next_link(Vec::<&str>::new()), None);
        assert_eq!(next_link([r#"</p>; rel="nextish""#]), None);
    }

    #[test]
    fn retry_after_reads_delay_seconds() {
        let now = at("2024-01-01T00:00:00Z");
        assert_eq!(retry_after("120", None, now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 ", None, now), Some(Duration::ZERO));
        assert_eq!(retry_after("99999999999999999999999", None, now), None);
        assert_eq!(retry_after("-5", None, now), None);
        assert_eq!(retry_after("soon", None, now), None);
        assert_eq!(retry_after("", None, now), None);
    }

    #[test]
    fn retry_after_reads_http_dates_in_all_three_formats() {
        let now = at("1994-11-06T08:49:00Z");
        let expected = Some(Duration::from_secs(37));
        assert_eq!(retry_after("Sun, 06 Nov 1994 08:49:37 GMT", None, now), expected);
        assert_eq!(retry_after("Sunday, 06-Nov-94 08:49:37 GMT", None, now), expected);
        assert_eq!(retry_after("Sun Nov  6 08:49:37 1994", None, now), expected);
    }

    #[test]
    fn retry_after_dates_are_measured_from_the_response_date_and_never_negative() {
        let skewed_now = at("1994-11-06T09:00:00Z");
        assert_eq!(
            retry_after(
                "Sun, 06 Nov 1994 08:49:37 GMT",
                Some("Sun, 06 Nov 1994 08:49:07 GMT"),
                skewed_now
            ),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", None, skewed_now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn rate_limit_remaining_reads_plain_and_docker_hub_forms() {
        assert_eq!(rate_limit_remaining("76"), Some(76));
        assert_eq!(rate_limit_remaining("76;w=21600"), Some(76));
        assert_eq!(rate_limit_remaining(" 0 ; w=60"), Some(0));
        assert_eq!(rate_limit_remaining("many"), None);
        assert_eq!(rate_limit_remaining(""), None);
    }
}
