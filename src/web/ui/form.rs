//! Posted forms: [`FormData`] reads an `application/x-www-form-urlencoded` body; the helpers turn
//! its text into the JSON the API's request types read (so the API's own parsing names a bad
//! field exactly as it would for a JSON client); [`Forms`] carries a refused form back to its
//! page — the values as typed (never passwords) and the error next to the field it names.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::web::auth::CSRF_FORM_FIELD;
use crate::web::error::{WebError, WebResult};
use crate::web::extract::parse_json;

/// The field a destructive form must carry; only the confirming button sends it.
pub const CONFIRM_FIELD: &str = "confirm";

/// A posted form, in order, with repeated names kept (the last one wins for single values).
#[derive(Debug, Clone, Default)]
pub struct FormData {
    pairs: Vec<(String, String)>,
}

impl FormData {
    pub fn parse(body: &[u8]) -> Self {
        Self {
            pairs: form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }
    }

    /// The last value sent for `name`, as sent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value sent for `name` (checkboxes sharing a name), in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The value of `name`, trimmed; empty when absent.
    pub fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or("").trim().to_owned()
    }

    /// The value of `name`, trimmed; `None` when absent or blank.
    pub fn opt(&self, name: &str) -> Option<String> {
        Some(self.text(name)).filter(|s| !s.is_empty())
    }

    /// A checkbox: an unchecked box sends nothing, or the hidden `false` placed before it.
    pub fn checked(&self, name: &str) -> bool {
        matches!(self.get(name), Some("on" | "true" | "1" | "yes"))
    }

    /// Every `(name without prefix, value)` whose name starts with `prefix`, in order
    /// (`project.4=true` → `("4", "true")`), for lists of checkboxes.
    pub fn pairs_with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.pairs
            .iter()
            .filter_map(move |(k, v)| k.strip_prefix(prefix).map(|rest| (rest, v.as_str())))
    }

    /// Whether the confirming button of a destructive form sent this post.
    pub fn confirmed(&self) -> bool {
        self.get(CONFIRM_FIELD) == Some("yes")
    }

    /// The values to show again in a refused form: not the CSRF token, not passwords, not
    /// secrets (`secrets.url`).
    fn shown_values(&self) -> HashMap<String, String> {
        self.pairs
            .iter()
            // Passwords and secret values are never echoed back into a page.
            .filter(|(k, _)| k != CSRF_FORM_FIELD && !k.contains("password") && !k.contains("secret"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// A form text as a JSON integer when it is one, else as the text (the API then names the
/// field: "invalid type: string, expected u16"); `null` when blank.
pub fn json_number(raw: &str) -> Value {
    let raw = raw.trim();
    if raw.is_empty() {
        return Value::Null;
    }
    if let Ok(n) = raw.parse::<i64>() {
        return Value::from(n);
    }
    if let Ok(x) = raw.parse::<f64>()
        && x.is_finite()
    {
        return Value::from(x);
    }
    Value::from(raw)
}

/// A form text as a JSON string, or `null` when blank.
pub fn json_text(raw: Option<String>) -> Value {
    raw.map_or(Value::Null, Value::from)
}

/// Builds one of the API's request types from JSON, with the API's field-naming errors.
pub fn api_body<T: DeserializeOwned>(value: &Value) -> WebResult<T> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| WebError::internal(anyhow::anyhow!("encoding a form as JSON: {e}")))?;
    parse_json(&bytes)
}

/// The refused form of a page, if any.
#[derive(Debug, Clone, Default)]
pub struct Forms {
    failed: Option<FailedForm>,
}

#[derive(Debug, Clone)]
struct FailedForm {
    id: String,
    values: HashMap<String, String>,
    /// The input the error belongs to, when it names one of the form's inputs.
    field: Option<String>,
    /// The field the API named, as it named it.
    api_field: Option<String>,
    message: String,
}

impl Forms {
    /// No form was refused: every input shows its current value.
    pub fn none() -> Self {
        Self::default()
    }

    /// Form `id` was refused with `err`; `fields` are its inputs' names, so the error is shown
    /// next to the one it names (`container.env.FOO` belongs to `container.env`), or above the
    /// form when it names none.
    pub fn failed(id: impl Into<String>, form: &FormData, err: &WebError, fields: &[&str]) -> Self {
        let field = err.field.as_deref().and_then(|f| match_field(f, fields));
        Self {
            failed: Some(FailedForm {
                id: id.into(),
                values: form.shown_values(),
                field: field.map(str::to_owned),
                api_field: err.field.clone(),
                message: err.message.clone(),
            }),
        }
    }

    fn of(&self, id: &str) -> Option<&FailedForm> {
        self.failed.as_ref().filter(|f| f.id == id)
    }

    /// Whether form `id` was refused (its `<details>` stays open).
    pub fn is_open(&self, id: &str) -> bool {
        self.of(id).is_some()
    }

    /// What input `name` of form `id` shows: what was typed when the form was refused, else
    /// `default` (the current value).
    pub fn value(&self, id: &str, name: &str, default: &str) -> String {
        match self.of(id) {
            Some(failed) => failed.values.get(name).cloned().unwrap_or_default(),
            None => default.to_owned(),
        }
    }

    /// Whether checkbox `name` of form `id` is checked.
    pub fn checked(&self, id: &str, name: &str, default: &bool) -> bool {
        match self.of(id) {
            Some(failed) => matches!(
                failed.values.get(name).map(String::as_str),
                Some("on" | "true" | "1" | "yes")
            ),
            None => *default,
        }
    }

    /// Whether option `option` of select `name` is selected.
    pub fn selected(&self, id: &str, name: &str, option: &str, default: &str) -> bool {
        self.value(id, name, default) == option
    }

    /// The error to show next to input `name` of form `id`.
    pub fn error(&self, id: &str, name: &str) -> Option<&str> {
        self.of(id)
            .filter(|f| f.field.as_deref() == Some(name))
            .map(|f| f.message.as_str())
    }

    /// The error to show above form `id`: one that names none of its inputs.
    pub fn general_error(&self, id: &str) -> Option<String> {
        self.of(id)
            .filter(|f| f.field.is_none())
            .map(|f| match &f.api_field {
                Some(field) => format!("{field}: {}", f.message),
                None => f.message.clone(),
            })
    }
}

/// The input an API error field belongs to: the same name, the input it is inside of
/// (`container.env.FOO` → `container.env`), or the first input inside it
/// (`container.health_check` → `container.health_check.path`).
fn match_field<'a>(field: &str, fields: &[&'a str]) -> Option<&'a str> {
    fields
        .iter()
        .find(|f| **f == field)
        .or_else(|| {
            fields
                .iter()
                .filter(|f| field.starts_with(&format!("{f}.")))
                .max_by_key(|f| f.len())
        })
        .or_else(|| fields.iter().find(|f| f.starts_with(&format!("{field}."))))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_value_wins_and_checkboxes_read_their_hidden_default() {
        let form = FormData::parse(b"auto_deploy=false&auto_deploy=on&name=+web+&csrf_token=t&password=pw");
        assert!(form.checked("auto_deploy"));
        assert_eq!(form.text("name"), "web");
        assert_eq!(form.opt("missing"), None);
        let unchecked = FormData::parse(b"auto_deploy=false");
        assert!(!unchecked.checked("auto_deploy"));
        let shown = form.shown_values();
        assert!(!shown.contains_key("csrf_token") && !shown.contains_key("password"));
    }

    #[test]
    fn numbers_stay_numbers_and_anything_else_goes_to_the_api_as_text() {
        assert_eq!(json_number(" 8080 "), Value::from(8080));
        assert_eq!(json_number("0.5"), Value::from(0.5));
        assert_eq!(json_number("eighty"), Value::from("eighty"));
        assert_eq!(json_number(""), Value::Null);
    }

    #[test]
    fn an_error_is_shown_next_to_the_input_it_names() {
        let fields = ["name", "container.env", "container.health_check.path"];
        assert_eq!(match_field("name", &fields), Some("name"));
        assert_eq!(match_field("container.env.FOO", &fields), Some("container.env"));
        assert_eq!(
            match_field("container.health_check", &fields),
            Some("container.health_check.path")
        );
        assert_eq!(match_field("hostname", &fields), None);

        let form = FormData::parse(b"name=Bad&image=x");
        let forms = Forms::failed(
            "new",
            &form,
            &WebError::validation("name", "lowercase only"),
            &fields,
        );
        assert_eq!(forms.error("new", "name"), Some("lowercase only"));
        assert_eq!(forms.error("other", "name"), None);
        assert_eq!(forms.value("new", "name", "current"), "Bad");
        assert_eq!(forms.value("other", "name", "current"), "current");
        assert_eq!(forms.general_error("new"), None);
        let conflict = Forms::failed("new", &form, &WebError::conflict(None, "taken"), &fields);
        assert_eq!(conflict.general_error("new").as_deref(), Some("taken"));
    }
}
