//! Where things are in a stack file: byte offsets to lines and columns, a dotted field path
//! (`projects.shop.stages.prod.tag_policy`) to the place it is written, and back. Every error
//! about a stack file goes through here, so each one names the file, the line and the field —
//! whether it comes from the TOML parser, from serde, or from a value that does not parse.

use std::ops::Range;

use toml::Spanned;
use toml::de::DeTable;

/// A place in a stack file, as users read it: 1-based line and column, and the field there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
    /// The dotted path of the innermost field at that place; empty for the top level.
    pub path: String,
}

/// A parsed stack file's text and key tree, to locate fields and errors.
pub struct SourceMap<'a> {
    text: &'a str,
    tree: Option<Spanned<DeTable<'a>>>,
}

impl<'a> SourceMap<'a> {
    /// Indexes `text`; a file that is not valid TOML still locates offsets, not paths.
    pub fn new(text: &'a str) -> Self {
        Self {
            text,
            tree: DeTable::parse(text).ok(),
        }
    }

    /// Line and column (1-based, in characters) of a byte offset.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    /// Where the field at `path` is written: its value's position when the path names a value,
    /// else the deepest enclosing table that exists (the top of the file without a key tree).
    pub fn locate(&self, path: &[&str]) -> Location {
        let (span, found) = self.span_of(path);
        let (line, column) = self.line_column(span.start);
        Location {
            line,
            column,
            path: found.join("."),
        }
    }

    /// The location of a byte span, named by the innermost field containing it.
    pub fn locate_span(&self, span: Range<usize>) -> Location {
        let (line, column) = self.line_column(span.start);
        let mut path = Vec::new();
        if let Some(tree) = &self.tree {
            innermost_path(tree.get_ref(), &span, &mut path);
        }
        Location {
            line,
            column,
            path: path.join("."),
        }
    }

    /// The span of the value at `path`, walking as far as the file goes; the path that exists.
    fn span_of(&self, path: &[&str]) -> (Range<usize>, Vec<String>) {
        let Some(tree) = &self.tree else {
            return (0..0, Vec::new());
        };
        let mut span = 0..0;
        let mut found = Vec::new();
        let mut table = Some(tree.get_ref());
        for segment in path {
            let entry = table.and_then(|t| t.iter().find(|(k, _)| k.get_ref() == segment));
            let Some((key, value)) = entry else { break };
            // A table written as `[a.b]` has the header as its value's span: point at the key
            // when the value is a table, at the value otherwise.
            span = if value.get_ref().is_table() {
                key.span()
            } else {
                value.span()
            };
            found.push((*segment).to_owned());
            table = value.get_ref().as_table();
        }
        (span, found)
    }
}

/// The path of the innermost key whose value contains `span`.
fn innermost_path(table: &DeTable<'_>, span: &Range<usize>, path: &mut Vec<String>) {
    for (key, value) in table {
        let inside = |r: Range<usize>| r.start <= span.start && span.start < r.end.max(r.start + 1);
        if inside(key.span()) || inside(value.span()) {
            path.push(key.get_ref().to_string());
            if let Some(inner) = value.get_ref().as_table() {
                innermost_path(inner, span, path);
            }
            return;
        }
    }
    // Tables written as `[a.b]` headers have spans that do not cover their body: look for the
    // last key whose table holds a value at the span.
    for (key, value) in table {
        if let Some(inner) = value.get_ref().as_table()
            && contains_offset(inner, span.start)
        {
            path.push(key.get_ref().to_string());
            innermost_path(inner, span, path);
            return;
        }
    }
}

fn contains_offset(table: &DeTable<'_>, offset: usize) -> bool {
    table.iter().any(|(key, value)| {
        let (k, v) = (key.span(), value.span());
        (k.start <= offset && offset < v.end.max(k.end))
            || value
                .get_ref()
                .as_table()
                .is_some_and(|inner| contains_offset(inner, offset))
    })
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while offset > 0 && !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[settings]\nbase_domain = \"x\"\n\n[projects.shop]\nimage = \"nginx\"\n\n[projects.shop.stages.prod]\ntag_policy = \"nope\"\ncontainer = { port = 0 }\n";

    #[test]
    fn a_path_is_located_at_its_value() {
        let map = SourceMap::new(TEXT);
        let at = map.locate(&["projects", "shop", "stages", "prod", "tag_policy"]);
        assert_eq!((at.line, at.column), (8, 14));
        assert_eq!(at.path, "projects.shop.stages.prod.tag_policy");
        let at = map.locate(&["projects", "shop", "stages", "prod", "container", "port"]);
        assert_eq!((at.line, at.column), (9, 22));
    }

    #[test]
    fn a_missing_field_is_located_at_its_table() {
        let map = SourceMap::new(TEXT);
        let at = map.locate(&["projects", "shop", "stages", "prod", "hostname"]);
        assert_eq!(at.path, "projects.shop.stages.prod");
        assert_eq!(at.line, 7);
    }

    #[test]
    fn a_span_is_named_by_the_innermost_field() {
        let map = SourceMap::new(TEXT);
        let offset = TEXT.find("\"nope\"").unwrap();
        let at = map.locate_span(offset..offset + 6);
        assert_eq!(at.path, "projects.shop.stages.prod.tag_policy");
        assert_eq!(at.line, 8);
        let offset = TEXT.find("port = 0").unwrap() + 7;
        assert_eq!(
            map.locate_span(offset..offset + 1).path,
            "projects.shop.stages.prod.container.port"
        );
    }

    #[test]
    fn lines_and_columns_count_characters() {
        let map = SourceMap::new("a = \"é\"\nb = 1\n");
        assert_eq!(map.line_column(0), (1, 1));
        assert_eq!(map.line_column(9), (2, 1));
        assert_eq!(map.line_column(8), (1, 8), "é is one column of two bytes");
    }
}
