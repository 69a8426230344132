//! `TagPolicy`: which of a repository's tags a stage deploys (SPEC §2, "Tag policies"), and
//! [`parse_tag_version`], the lenient reading of tags as versions it relies on.
//!
//! A policy is written `kind:argument`:
//! - `tag:NAME` (single): follow one tag, such as `latest`; a redeploy happens when its digest
//!   changes, which the poller sees, not this type.
//! - `semver:REQ` (single): the highest tag that reads as a version and satisfies the
//!   requirement `REQ` (`^1.2`, `>=2, <3`, `*`), with Cargo's requirement syntax and rules.
//! - `glob:PATTERN` (per tag): every tag the glob matches gets its own instance.
//! - `regex:RE` (per tag): as glob, with a regular expression that must match the whole tag.
//!
//! Parsing compiles everything once, so a policy that is stored can always be evaluated, and
//! evaluation is a single pass over the tag list (registries can list thousands of tags).
//! Two policies are equal when their canonical strings are: compiled matchers cannot be
//! compared, and the string is what users see and the store keeps.
//!
//! # How tags read as versions
//! Real tags are not strict semver, so [`parse_tag_version`] reads a tag as
//! `[v|V]MAJOR[.MINOR[.PATCH]][-PRE]`: one leading `v` is dropped, missing parts are zero
//! (`1.2` is 1.2.0; leading zeros are allowed, so date tags like `2024.01.05` are versions), and
//! a suffix after the first `-` that is a valid semver pre-release (`rc.1`, `alpine`,
//! `alpine3.19`) makes a pre-release. Anything else (`latest`, `1.2.3.4`, `1.2_x`, `sha-abc`) is
//! not a version and is ignored by `semver:`.
//!
//! Variants such as `1.25-alpine` therefore count as pre-releases of 1.25.0. With semver's rule
//! that a pre-release satisfies a requirement only when the requirement names a pre-release of
//! the same `MAJOR.MINOR.PATCH`, `semver:^1` never picks `1.3.0-rc.1` or `1.25-alpine`, while
//! `semver:>=1.3.0-rc.1` can pick `1.3.0-rc.2`. Following "the newest `-alpine` variant" is not
//! something a semver requirement can say.
//!
//! When several tags read as the same version (`v1.2.0`, `1.2.0`, `1.2`), the choice is made
//! deterministically: the tag spelled exactly as the version (`1.2.0`) wins, then one without a
//! leading `v`, then the lexicographically smallest.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use globset::{GlobBuilder, GlobMatcher};
use regex::{Regex, RegexBuilder};
use semver::{BuildMetadata, Prerelease, Version, VersionReq};
use serde::{Deserialize, Serialize};

use crate::domain::ParseError;
use crate::domain::image_ref::is_valid_tag;

/// The longest policy string; a regular expression or glob longer than this is a mistake.
const MAX_LEN: usize = 1024;
/// Memory bounds for a compiled regular expression, well below the regex crate's defaults: a
/// tag is at most 128 characters, and a pattern that needs more is rejected at parse time.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
const REGEX_DFA_SIZE_LIMIT: usize = 1 << 20;

const KINDS_HINT: &str = "tag policy must start with one of tag:, semver:, glob:, regex: \
     (like tag:latest, semver:^1.2, glob:pr-*, regex:pr-\\d+)";

/// How many instances a policy leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    /// At most one current instance: `tag:` and `semver:`.
    Single,
    /// One instance per matching tag: `glob:` and `regex:`.
    PerTag,
}

/// A parsed, compiled tag policy; see the module documentation.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TagPolicy {
    /// The canonical string, `kind:argument` with surrounding whitespace removed.
    source: String,
    rule: Rule,
}

#[derive(Clone, Debug)]
enum Rule {
    Tag(String),
    Semver(VersionReq),
    Glob(GlobMatcher),
    /// Compiled as `^(?:RE)$`.
    Regex(Regex),
}

impl TagPolicy {
    /// Parses a policy. Whitespace around the whole and around the argument is ignored.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(ParseError::new(format!(
                "tag policy must not be empty; {KINDS_HINT}"
            )));
        }
        if s.len() > MAX_LEN {
            return Err(ParseError::new(format!(
                "tag policy must be at most {MAX_LEN} characters long"
            )));
        }
        let Some((kind, argument)) = s.split_once(':') else {
            return Err(ParseError::new(KINDS_HINT));
        };
        let argument = argument.trim();
        let rule = match kind {
            "tag" => Rule::Tag(parse_tag_argument(argument)?),
            "semver" => Rule::Semver(parse_semver_argument(argument)?),
            "glob" => Rule::Glob(parse_glob_argument(argument)?),
            "regex" => Rule::Regex(parse_regex_argument(argument)?),
            _ => return Err(ParseError::new(KINDS_HINT)),
        };
        Ok(Self {
            source: format!("{kind}:{argument}"),
            rule,
        })
    }

    pub fn mode(&self) -> PolicyMode {
        match self.rule {
            Rule::Tag(_) | Rule::Semver(_) => PolicyMode::Single,
            Rule::Glob(_) | Rule::Regex(_) => PolicyMode::PerTag,
        }
    }

    /// The one tag a `tag:` policy follows; `None` for the other kinds. A poller can check
    /// that tag's digest without listing all tags.
    pub fn fixed_tag(&self) -> Option<&str> {
        match &self.rule {
            Rule::Tag(name) => Some(name),
            _ => None,
        }
    }

    /// Whether `tag` is one this policy accepts: the named tag, a version satisfying the
    /// requirement, or a tag the glob or (whole-tag) regex matches.
    pub fn matches(&self, tag: &str) -> bool {
        match &self.rule {
            Rule::Tag(name) => name == tag,
            Rule::Semver(req) => parse_tag_version(tag).is_some_and(|v| req.matches(&v)),
            Rule::Glob(glob) => glob.is_match(tag),
            Rule::Regex(regex) => regex.is_match(tag),
        }
    }

    /// The tag a single policy deploys from the registry's `tags`: for `tag:` the named tag if
    /// listed, for `semver:` the highest matching version (ties broken as the module
    /// documentation says). Per-tag policies select no single tag: `None`.
    pub fn select_single<'a>(&self, tags: &'a [String]) -> Option<&'a str> {
        match &self.rule {
            Rule::Tag(name) => tags.iter().map(String::as_str).find(|tag| tag == name),
            Rule::Semver(req) => select_highest(req, tags),
            Rule::Glob(_) | Rule::Regex(_) => None,
        }
    }

    /// Every tag the policy deploys from `tags`: for per-tag policies the matching tags,
    /// sorted and without duplicates; for single policies the [`Self::select_single`] choice,
    /// if any.
    pub fn select_all<'a>(&self, tags: &'a [String]) -> Vec<&'a str> {
        match self.mode() {
            PolicyMode::Single => self.select_single(tags).into_iter().collect(),
            PolicyMode::PerTag => {
                let mut selected: Vec<&str> = tags
                    .iter()
                    .map(String::as_str)
                    .filter(|tag| self.matches(tag))
                    .collect();
                selected.sort_unstable();
                selected.dedup();
                selected
            }
        }
    }
}

fn parse_tag_argument(argument: &str) -> Result<String, ParseError> {
    if argument.is_empty() {
        return Err(ParseError::new(
            "tag: needs a tag name, like tag:latest or tag:main",
        ));
    }
    if !is_valid_tag(argument) {
        return Err(ParseError::new(format!(
            "invalid tag \"{argument}\" in tag policy: a tag is 1 to 128 letters, digits, '_', \
             '.' and '-', not starting with '.' or '-'"
        )));
    }
    Ok(argument.to_owned())
}

fn parse_semver_argument(argument: &str) -> Result<VersionReq, ParseError> {
    if argument.is_empty() {
        return Err(ParseError::new(
            "semver: needs a version requirement, like semver:^1.2, semver:>=2, <3 or semver:*",
        ));
    }
    VersionReq::parse(argument).map_err(|e| {
        ParseError::new(format!(
            "invalid semver requirement \"{argument}\": {e} (examples: ^1.2, ~1.4, >=2, <3, *)"
        ))
    })
}

fn parse_glob_argument(argument: &str) -> Result<GlobMatcher, ParseError> {
    if argument.is_empty() {
        return Err(ParseError::new(
            "glob: needs a pattern, like glob:pr-* or glob:feature-*",
        ));
    }
    GlobBuilder::new(argument)
        .build()
        .map(|glob| glob.compile_matcher())
        .map_err(|e| ParseError::new(format!("invalid glob pattern \"{argument}\": {}", e.kind())))
}

fn parse_regex_argument(argument: &str) -> Result<Regex, ParseError> {
    if argument.is_empty() {
        return Err(ParseError::new(
            "regex: needs a regular expression, like regex:pr-\\d+",
        ));
    }
    let build = |pattern: &str| {
        RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
            .build()
    };
    // Compiling the expression alone first proves its groups are balanced, so wrapping it in
    // `^(?:…)$` anchors all of it: `a)|(b` must not become `^(?:a)|(b)$`.
    build(argument).map_err(|e| regex_error(argument, &e))?;
    // The wrapped form can still fail to compile, when an `(?x)` comment runs to the end of
    // the expression and swallows the closing `)$`; it never compiles to something else.
    build(&format!("^(?:{argument})$")).map_err(|_| {
        ParseError::new(format!(
            "regular expression \"{argument}\" cannot be anchored to the whole tag; if it ends \
             in an (?x) comment, end the comment with a newline"
        ))
    })
}

/// A one-line message for a regex error: the crate's syntax errors span several lines with
/// a caret diagram, of which the `error:` line is the part a user needs.
fn regex_error(argument: &str, error: &regex::Error) -> ParseError {
    let reason = match error {
        regex::Error::Syntax(text) => text
            .lines()
            .find_map(|line| line.trim().strip_prefix("error: "))
            .map(str::to_owned)
            .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" ")),
        regex::Error::CompiledTooBig(_) => "it is too large or complex".to_owned(),
        other => other.to_string(),
    };
    ParseError::new(format!("invalid regular expression \"{argument}\": {reason}"))
}

/// Reads a tag as a version, leniently; see "How tags read as versions" in the module
/// documentation. `None` when the tag is not a version.
pub fn parse_tag_version(tag: &str) -> Option<Version> {
    let rest = tag.strip_prefix(['v', 'V']).unwrap_or(tag);
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let mut numbers = [0u64; 3];
    for (index, part) in core.split('.').enumerate() {
        // A fourth part finds no slot: `1.2.3.4` is not a version.
        let slot = numbers.get_mut(index)?;
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = part.parse().ok()?;
    }
    let pre = match pre {
        None => Prerelease::EMPTY,
        Some("") => return None,
        Some(pre) => Prerelease::new(pre).ok()?,
    };
    let [major, minor, patch] = numbers;
    Some(Version {
        major,
        minor,
        patch,
        pre,
        build: BuildMetadata::EMPTY,
    })
}

/// The highest version among `tags` that satisfies `req`, in one pass: each tag is read once,
/// and the requirement is only evaluated for a tag that would beat the current best.
fn select_highest<'a>(req: &VersionReq, tags: &'a [String]) -> Option<&'a str> {
    let mut best: Option<(Version, &'a str)> = None;
    for tag in tags {
        let Some(version) = parse_tag_version(tag) else {
            continue;
        };
        let beats_best = match &best {
            None => true,
            Some((best_version, best_tag)) => match version.cmp(best_version) {
                Ordering::Greater => true,
                Ordering::Less => false,
                Ordering::Equal => spelling_preferred(tag, best_tag, &version),
            },
        };
        if beats_best && req.matches(&version) {
            best = Some((version, tag));
        }
    }
    best.map(|(_, tag)| tag)
}

/// Whether `candidate` is preferred over `current`, two spellings of `version`: the exact
/// spelling first, then no leading `v`, then the lexicographically smaller.
fn spelling_preferred(candidate: &str, current: &str, version: &Version) -> bool {
    let exact = version.to_string();
    let rank = |tag: &str| (tag == exact, !tag.starts_with(['v', 'V']));
    match rank(candidate).cmp(&rank(current)) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => candidate < current,
    }
}

impl PartialEq for TagPolicy {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for TagPolicy {}

impl Hash for TagPolicy {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.source.hash(state);
    }
}

impl FromStr for TagPolicy {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for TagPolicy {
    type Error = ParseError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TagPolicy> for String {
    fn from(policy: TagPolicy) -> Self {
        policy.source
    }
}

impl fmt::Display for TagPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(input: &str) -> TagPolicy {
        match TagPolicy::parse(input) {
            Ok(p) => p,
            Err(e) => panic!("{input:?} should parse: {e}"),
        }
    }

    fn error_of(input: &str) -> String {
        match TagPolicy::parse(input) {
            Ok(p) => panic!("{input:?} should be rejected, got {p}"),
            Err(e) => e.to_string(),
        }
    }

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| (*t).to_owned()).collect()
    }

    fn single(policy_text: &str, list: &[&str]) -> Option<String> {
        policy(policy_text).select_single(&tags(list)).map(str::to_owned)
    }

    fn version(major: u64, minor: u64, patch: u64) -> Version {
        Version::new(major, minor, patch)
    }

    #[test]
    fn each_kind_parses_and_has_its_mode() {
        assert_eq!(policy("tag:latest").mode(), PolicyMode::Single);
        assert_eq!(policy("semver:^1.2").mode(), PolicyMode::Single);
        assert_eq!(policy("glob:pr-*").mode(), PolicyMode::PerTag);
        assert_eq!(policy("regex:pr-\\d+").mode(), PolicyMode::PerTag);
    }

    #[test]
    fn display_round_trips_the_canonical_string() {
        for input in [
            "tag:latest",
            "semver:>=2, <3",
            "glob:feature-*",
            "regex:pr-\\d+",
            "semver:*",
        ] {
            let p = policy(input);
            assert_eq!(p.to_string(), input);
            assert_eq!(TagPolicy::parse(&p.to_string()), Ok(p));
        }
        assert_eq!(policy("  semver: ^1.2 ").to_string(), "semver:^1.2");
    }

    #[test]
    fn policies_compare_by_their_canonical_string() {
        assert_eq!(policy("glob:pr-*"), policy(" glob: pr-* "));
        assert_ne!(policy("glob:pr-*"), policy("regex:pr-.*"));
        assert_eq!(policy("regex:a|b").clone(), policy("regex:a|b"));
    }

    #[test]
    fn an_unknown_or_missing_kind_names_the_valid_kinds() {
        for bad in ["latest", "version:1", "Tag:latest", ":x", "semver"] {
            assert!(
                error_of(bad).starts_with("tag policy must start with one of tag:, semver:, glob:, regex:"),
                "{bad}"
            );
        }
        assert!(error_of("").contains("must not be empty"));
    }

    #[test]
    fn empty_arguments_get_an_example() {
        assert!(error_of("tag:").contains("tag:latest"));
        assert!(error_of("semver: ").contains("semver:^1.2"));
        assert!(error_of("glob:").contains("glob:pr-*"));
        assert!(error_of("regex:").contains("regex:pr-"));
    }

    #[test]
    fn invalid_arguments_are_rejected_with_the_reason() {
        assert!(error_of("tag:-x").contains("invalid tag \"-x\""));
        assert!(error_of("tag:a b").contains("invalid tag"));
        assert!(error_of("semver:latest").contains("invalid semver requirement \"latest\""));
        assert!(error_of("glob:pr-[").contains("invalid glob pattern \"pr-[\""));
        let regex_error = error_of("regex:pr-(");
        assert!(
            regex_error.starts_with("invalid regular expression \"pr-(\""),
            "{regex_error}"
        );
        assert!(!regex_error.contains('\n'), "{regex_error}");
        assert!(error_of(&format!("glob:{}", "a".repeat(2000))).contains("at most 1024"));
    }

    #[test]
    fn regexes_too_large_to_compile_are_rejected() {
        assert!(error_of("regex:\\w{1000}\\w{1000}").contains("too large"));
    }

    #[test]
    fn a_regex_must_match_the_whole_tag() {
        let p = policy("regex:pr-\\d+");
        assert!(p.matches("pr-12"));
        assert!(!p.matches("xpr-12y"));
        assert!(!p.matches("pr-12y"));
        assert!(!p.matches("xpr-12"));
    }

    #[test]
    fn a_regex_alternation_is_anchored_as_a_whole() {
        let p = policy("regex:a|b");
        assert!(p.matches("a") && p.matches("b"));
        assert!(!p.matches("ab") && !p.matches("xa") && !p.matches("bx"));
    }

    #[test]
    fn a_regex_with_unbalanced_groups_cannot_escape_the_anchors() {
        assert!(error_of("regex:a)|(b").contains("invalid regular expression"));
    }

    #[test]
    fn a_regex_ending_in_a_verbose_comment_is_rejected_rather_than_unanchored() {
        assert!(error_of("regex:(?x)pr-\\d+ # preview").contains("cannot be anchored"));
    }

    #[test]
    fn a_glob_matches_whole_tags() {
        let p = policy("glob:pr-*");
        assert!(p.matches("pr-1"));
        assert!(p.matches("pr-"));
        assert!(!p.matches("xpr-1"));
        assert!(!p.matches("PR-1"));
        let alternatives = policy("glob:{feature,fix}-?");
        assert!(alternatives.matches("fix-a"));
        assert!(!alternatives.matches("fix-ab"));
    }

    #[test]
    fn select_all_returns_matching_tags_sorted_and_once() {
        let list = tags(&["pr-3", "main", "pr-10", "pr-1", "pr-3", "xpr-2"]);
        assert_eq!(policy("glob:pr-*").select_all(&list), ["pr-1", "pr-10", "pr-3"]);
        assert_eq!(policy("regex:pr-\\d").select_all(&list), ["pr-1", "pr-3"]);
        assert!(policy("glob:pr-*").select_single(&list).is_none());
    }

    #[test]
    fn select_all_of_a_single_policy_is_its_single_choice() {
        let list = tags(&["1.0.0", "2.0.0", "latest"]);
        assert_eq!(policy("semver:*").select_all(&list), ["2.0.0"]);
        assert_eq!(policy("tag:latest").select_all(&list), ["latest"]);
        assert!(policy("tag:main").select_all(&list).is_empty());
    }

    #[test]
    fn a_tag_policy_selects_its_tag_only_when_listed() {
        assert_eq!(
            single("tag:latest", &["1.0", "latest"]),
            Some("latest".to_owned())
        );
        assert_eq!(single("tag:latest", &["1.0"]), None);
        assert_eq!(policy("tag:latest").fixed_tag(), Some("latest"));
        assert_eq!(policy("semver:*").fixed_tag(), None);
        assert!(policy("tag:latest").matches("latest"));
        assert!(!policy("tag:latest").matches("Latest"));
    }

    #[test]
    fn semver_orders_numerically_so_1_10_beats_1_9() {
        assert_eq!(
            single("semver:^1", &["1.9.0", "1.10.0", "1.2.0"]),
            Some("1.10.0".to_owned())
        );
        assert_eq!(single("semver:*", &["1.9", "1.10"]), Some("1.10".to_owned()));
    }

    #[test]
    fn semver_picks_the_highest_tag_satisfying_the_requirement() {
        let list = ["1.2.0", "1.3.5", "2.0.0", "2.1.0", "3.0.0", "latest", "main"];
        assert_eq!(single("semver:^1.2", &list), Some("1.3.5".to_owned()));
        assert_eq!(single("semver:>=2, <3", &list), Some("2.1.0".to_owned()));
        assert_eq!(single("semver:*", &list), Some("3.0.0".to_owned()));
        assert_eq!(single("semver:^4", &list), None);
        assert_eq!(single("semver:*", &["latest", "main"]), None);
        assert_eq!(single("semver:*", &[]), None);
    }

    #[test]
    fn semver_accepts_a_leading_v_and_missing_parts() {
        assert_eq!(
            single("semver:^1", &["v1.0.0", "v1.4", "V1.3.9"]),
            Some("v1.4".to_owned())
        );
        assert_eq!(
            single("semver:~2.1", &["2", "2.1", "2.2"]),
            Some("2.1".to_owned())
        );
    }

    #[test]
    fn semver_skips_pre_releases_unless_the_requirement_names_one() {
        let list = ["1.2.0", "1.3.0-rc.1", "1.3.0-rc.2", "1.25-alpine"];
        assert_eq!(single("semver:^1", &list), Some("1.2.0".to_owned()));
        assert_eq!(
            single("semver:>=1.3.0-rc.1", &list),
            Some("1.3.0-rc.2".to_owned())
        );
        assert!(!policy("semver:^1").matches("1.3.0-rc.1"));
        assert!(policy("semver:>=1.3.0-rc.1").matches("1.3.0-rc.1"));
    }

    #[test]
    fn a_release_beats_its_own_pre_releases() {
        let list = ["1.3.0-rc.1", "1.3.0", "1.3.0-rc.2"];
        assert_eq!(single("semver:>=1.3.0-rc.1", &list), Some("1.3.0".to_owned()));
    }

    #[test]
    fn spellings_of_the_same_version_are_chosen_deterministically() {
        // The exact spelling wins regardless of list order…
        assert_eq!(
            single("semver:*", &["v1.2.0", "1.2.0", "1.2"]),
            Some("1.2.0".to_owned())
        );
        assert_eq!(
            single("semver:*", &["1.2", "1.2.0", "v1.2.0"]),
            Some("1.2.0".to_owned())
        );
        // …then a spelling without a leading v, then the smallest string.
        assert_eq!(single("semver:*", &["v1.2", "1.2"]), Some("1.2".to_owned()));
        assert_eq!(single("semver:*", &["1.2", "v1.2"]), Some("1.2".to_owned()));
        assert_eq!(single("semver:*", &["V1.2", "v1.2"]), Some("V1.2".to_owned()));
        assert_eq!(single("semver:*", &["01.2", "1.02"]), Some("01.2".to_owned()));
    }

    #[test]
    fn tags_read_as_versions_leniently() {
        assert_eq!(parse_tag_version("1.2.3"), Some(version(1, 2, 3)));
        assert_eq!(parse_tag_version("v1.2.3"), Some(version(1, 2, 3)));
        assert_eq!(parse_tag_version("V1"), Some(version(1, 0, 0)));
        assert_eq!(parse_tag_version("1.2"), Some(version(1, 2, 0)));
        assert_eq!(parse_tag_version("2024.01.05"), Some(version(2024, 1, 5)));
        let alpine = parse_tag_version("1.25-alpine").expect("a pre-release");
        assert_eq!((alpine.major, alpine.minor, alpine.patch), (1, 25, 0));
        assert_eq!(alpine.pre.as_str(), "alpine");
        assert_eq!(
            parse_tag_version("1.0.0-rc.1").map(|v| v.to_string()),
            Some("1.0.0-rc.1".to_owned())
        );
    }

    #[test]
    fn tags_that_are_not_versions_are_ignored() {
        for tag in [
            "latest",
            "",
            "v",
            "1.",
            ".1",
            "1..2",
            "1.2.3.4",
            "1.2-",
            "+1",
            "1.+2",
            "1.2_x",
            "sha-abc",
            "1.0-rc.01",
            "vv1",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_tag_version(tag), None, "{tag:?}");
        }
    }

    #[test]
    fn selecting_among_thousands_of_tags_is_one_pass() {
        let list: Vec<String> = (0..5000)
            .map(|i| format!("{}.{}.{}", i % 7, i % 13, i))
            .chain(["latest".to_owned(), "main".to_owned()])
            .collect();
        // Major 6 with the highest minor (12) and then the highest patch: i = 90 + 91k.
        let p = policy("semver:^6");
        assert_eq!(p.select_single(&list), Some("6.12.4913"));
    }

    #[test]
    fn serde_uses_the_canonical_string() {
        let p = policy("semver:^1.2");
        assert_eq!(serde_json::to_string(&p).expect("serializes"), "\"semver:^1.2\"");
        let back: TagPolicy = serde_json::from_str("\" semver: ^1.2\"").expect("deserializes");
        assert_eq!(back, p);
        let err = serde_json::from_str::<TagPolicy>("\"latest\"").expect_err("no kind");
        assert!(err.to_string().contains("tag:, semver:, glob:, regex:"));
        assert_eq!(
            serde_json::to_string(&PolicyMode::PerTag).expect("serializes"),
            "\"per_tag\""
        );
    }
}
