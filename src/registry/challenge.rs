//! Parsing `WWW-Authenticate` challenges (RFC 9110 §11.6.1) as registries send them on a 401:
//! `Basic realm="Registry Realm"` or `Bearer realm="https://auth.example/token",
//! service="registry.example",scope="repository:org/app:pull"`.
//!
//! The parser is lenient where real servers are sloppy and strict nowhere that matters: one
//! header may carry several challenges separated by commas, and several headers may each carry
//! some; quoted values may contain commas, `=` and escaped quotes; unquoted values are read up to
//! the next comma or space (some servers leave URLs unquoted); scheme and parameter names are
//! case-insensitive. Anything unreadable is skipped rather than failing the request: the caller
//! only needs the first usable `Bearer` or `Basic` challenge.

/// One challenge: a lower-cased scheme and its parameters (names lower-cased, values as sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub scheme: String,
    params: Vec<(String, String)>,
}

impl Challenge {
    /// The value of parameter `name` (give it in lower case), if present.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Every challenge in the given `WWW-Authenticate` header values, in order.
pub(crate) fn parse_challenges<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Challenge> {
    let mut challenges = Vec::new();
    for value in values {
        Parser { rest: value }.challenges_into(&mut challenges);
    }
    challenges
}

/// RFC 9110 `tchar`: the characters of a token.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

struct Parser<'a> {
    rest: &'a str,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<char> {
        self.rest.chars().next()
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.rest = &self.rest[c.len_utf8()..];
        }
    }

    fn skip_spaces(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t']);
    }

    fn skip_spaces_and_commas(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t', ',']);
    }

    fn token(&mut self) -> &'a str {
        let end = self.rest.find(|c| !is_token_char(c)).unwrap_or(self.rest.len());
        let (token, rest) = self.rest.split_at(end);
        self.rest = rest;
        token
    }

    /// A quoted string after its opening quote, with `\x` escapes resolved; an unterminated
    /// string runs to the end of the header.
    fn quoted_rest(&mut self) -> String {
        let mut value = String::new();
        let mut chars = self.rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = &self.rest[i + 1..];
                    return value;
                }
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                c => value.push(c),
            }
        }
        self.rest = "";
        value
    }

    /// An unquoted value: up to the next comma or space.
    fn bare_value(&mut self) -> &'a str {
        let end = self.rest.find([',', ' ', '\t']).unwrap_or(self.rest.len());
        let (value, rest) = self.rest.split_at(end);
        self.rest = rest;
        value
    }

    fn challenges_into(&mut self, out: &mut Vec<Challenge>) {
        loop {
            self.skip_spaces_and_commas();
            if self.rest.is_empty() {
                return;
            }
            let scheme = self.token();
            if scheme.is_empty() {
                // Not a token: skip the character and look for the next challenge.
                self.bump();
                continue;
            }
            let mut challenge = Challenge {
                scheme: scheme.to_ascii_lowercase(),
                params: Vec::new(),
            };
            self.params_into(&mut challenge.params);
            out.push(challenge);
        }
    }

    /// Reads `name=value` pairs separated by commas, stopping before a token that is not
    /// followed by `=`: that is the scheme of the next challenge.
    fn params_into(&mut self, params: &mut Vec<(String, String)>) {
        loop {
            self.skip_spaces_and_commas();
            let before = self.rest;
            let name = self.token();
            if name.is_empty() {
                // The end, or a stray character: let the challenge loop deal with it.
                self.rest = before;
                return;
            }
            self.skip_spaces();
            if self.peek() != Some('=') {
                self.rest = before;
                return;
            }
            self.bump();
            self.skip_spaces();
            let value = match self.peek() {
                Some('"') => {
                    self.bump();
                    self.quoted_rest()
                }
                // `token68` padding (`Basic abc==`) or an empty value: nothing to keep.
                Some('=') | Some(',') | None => {
                    self.rest = self.rest.trim_start_matches('=');
                    continue;
                }
                Some(_) => self.bare_value().to_owned(),
            };
            params.push((name.to_ascii_lowercase(), value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(header: &str) -> Challenge {
        let mut all = parse_challenges([header]);
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0)
    }

    #[test]
    fn a_docker_hub_bearer_challenge_is_read_in_full() {
        let c = one(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        );
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c.param("service"), Some("registry.docker.io"));
        assert_eq!(c.param("scope"), Some("repository:library/nginx:pull"));
    }

    #[test]
    fn quoted_values_may_hold_commas_equals_signs_and_escaped_quotes() {
        let c = one(
            r#"Bearer realm="https://a.example/token?x=1,y=2", scope="repository:a/b:pull,push", error="say \"hi\"""#,
        );
        assert_eq!(c.param("realm"), Some("https://a.example/token?x=1,y=2"));
        assert_eq!(c.param("scope"), Some("repository:a/b:pull,push"));
        assert_eq!(c.param("error"), Some(r#"say "hi""#));
    }

    #[test]
    fn schemes_and_names_are_case_insensitive_and_spaces_around_equals_are_allowed() {
        let c = one(r#"BASIC Realm = "Registry Realm" , Charset="UTF-8""#);
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.param("realm"), Some("Registry Realm"));
        assert_eq!(c.param("charset"), Some("UTF-8"));
    }

    #[test]
    fn several_challenges_in_one_header_and_across_headers_are_all_found() {
        let all = parse_challenges([
            r#"Basic realm="x", Bearer realm="https://t.example/token",service="reg""#,
            r#"Negotiate"#,
            r#"Bearer realm=https://unquoted.example/token, service=reg2"#,
        ]);
        let schemes: Vec<_> = all.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["basic", "bearer", "negotiate", "bearer"]);
        assert_eq!(all[1].param("service"), Some("reg"));
        assert_eq!(all[3].param("realm"), Some("https://unquoted.example/token"));
        assert_eq!(all[3].param("service"), Some("reg2"));
    }

    #[test]
    fn token68_credentials_and_garbage_do_not_derail_the_parser() {
        let all = parse_challenges([r#"Newauth abc123==, Basic realm="r""#]);
        let schemes: Vec<_> = all.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["newauth", "basic"]);
        assert_eq!(all[1].param("realm"), Some("r"));

        for garbage in [
            "",
            ",,,",
            "\"",
            "=",
            "Bearer realm=\"unterminated",
            "é ü",
            "Bearer =",
        ] {
            // Must not panic; what comes out does not matter.
            let _ = parse_challenges([garbage]);
        }
        assert_eq!(
            parse_challenges(["Bearer realm=\"unterminated"])[0].param("realm"),
            Some("unterminated")
        );
    }
}
