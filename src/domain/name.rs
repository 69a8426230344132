//! `Name`: the name of a project or a stage. Names end up inside container names
//! (`dw-{project}-{stage}-{id}`) and as DNS labels in generated hostnames
//! (`{stage}.{project}.{base_domain}`), so a name is exactly a lowercase DNS label: 1 to 63
//! characters of `a-z`, `0-9` and `-`, starting and ending with a letter or digit. Parsing never
//! silently rewrites what the user typed (no lower-casing): a name that would have to change is
//! rejected with a message saying how to fix it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::ParseError;

/// The longest name: the length limit of one DNS label.
const MAX_LEN: usize = 63;

/// A project or stage name; see the module documentation for the rules.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    /// Parses a name. Surrounding whitespace is ignored; everything else must already follow
    /// the rules.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let name = input.trim();
        if name.is_empty() {
            return Err(ParseError::new("name must not be empty"));
        }
        let len = name.chars().count();
        if len > MAX_LEN {
            return Err(ParseError::new(format!(
                "name must be at most {MAX_LEN} characters long (got {len})"
            )));
        }
        if name.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ParseError::new(format!(
                "name must be lowercase: use \"{}\" instead of \"{name}\"",
                name.to_ascii_lowercase()
            )));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(ParseError::new(format!(
                "name may contain only lowercase letters, digits and '-', not {bad:?}"
            )));
        }
        if name.starts_with('-') || name.ends_with('-') {
            return Err(ParseError::new(
                "name must start and end with a letter or digit, not '-'",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Name {
    type Error = ParseError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Name> for String {
    fn from(name: Name) -> Self {
        name.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(input: &str) -> String {
        match Name::parse(input) {
            Ok(name) => panic!("{input:?} should be rejected, got {name:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn simple_lowercase_names_are_accepted() {
        for ok in ["a", "web", "my-app", "app2", "2fast", "a-b-c", "x1-y2"] {
            assert_eq!(Name::parse(ok).map(|n| n.to_string()), Ok(ok.to_owned()));
        }
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        assert_eq!(
            Name::parse("  web \n").map(|n| n.to_string()),
            Ok("web".to_owned())
        );
    }

    #[test]
    fn a_name_of_exactly_63_characters_is_accepted_and_64_is_not() {
        assert!(Name::parse(&"a".repeat(63)).is_ok());
        assert!(error_of(&"a".repeat(64)).contains("at most 63"));
    }

    #[test]
    fn an_empty_name_is_rejected() {
        assert_eq!(error_of(""), "name must not be empty");
        assert_eq!(error_of("   "), "name must not be empty");
    }

    #[test]
    fn uppercase_is_rejected_with_a_suggestion_instead_of_being_lowercased() {
        assert_eq!(
            error_of("MyApp"),
            "name must be lowercase: use \"myapp\" instead of \"MyApp\""
        );
    }

    #[test]
    fn characters_outside_the_alphabet_are_named_in_the_error() {
        assert!(error_of("my_app").contains("'_'"));
        assert!(error_of("my.app").contains("'.'"));
        assert!(error_of("my app").contains("' '"));
        assert!(error_of("café").contains("'é'"));
    }

    #[test]
    fn leading_or_trailing_hyphens_are_rejected() {
        assert!(error_of("-web").contains("start and end"));
        assert!(error_of("web-").contains("start and end"));
        assert!(error_of("-").contains("start and end"));
    }

    #[test]
    fn serde_round_trips_through_the_string_form() {
        let name = Name::parse("web").expect("valid");
        let json = serde_json::to_string(&name).expect("serializes");
        assert_eq!(json, "\"web\"");
        let back: Name = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, name);
    }

    #[test]
    fn deserializing_an_invalid_name_fails_with_the_parse_message() {
        let err = serde_json::from_str::<Name>("\"Web\"").expect_err("invalid");
        assert!(err.to_string().contains("must be lowercase"));
    }
}
