//! The fields of `POST /requests`: decoding the body (JSON or urlencoded) and checking every
//! field, naming each bad one. The request form itself (the domain rule) is [`crate::form`]'s.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, StatusCode, header};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::response::Problem;
use crate::form::{self, MAX_VALUE_LEN};

/// The fields `POST /requests` takes; any other is refused by name.
pub const FIELDS: [&str; 4] = ["domain", "holder", "contact", "email"];

/// The posted fields, in order, from a JSON object or a urlencoded form.
pub(super) fn parse_body(
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<Vec<(String, String)>, Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let unprocessable = |message: &str| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, message);
    match content_type.as_str() {
        "application/json" => {
            let value: Value = serde_json::from_slice(bytes)
                .map_err(|e| unprocessable(&format!("the body is not valid JSON: {e}")))?;
            if !value.is_object() {
                return Err(unprocessable("the body must be a JSON object"));
            }
            // Read again keeping every member: a `Value` keeps only the last of a key given
            // twice, which [`validate`] must see to refuse it.
            let Members(members) = serde_json::from_slice(bytes)
                .map_err(|e| unprocessable(&format!("the body is not valid JSON: {e}")))?;
            let mut pairs = Vec::new();
            let mut problem = unprocessable("the request has invalid fields");
            for (key, value) in members {
                match value {
                    Value::String(text) => pairs.push((key, text)),
                    Value::Null => {}
                    _ => {
                        problem.fields.insert(key, "must be a string".into());
                    }
                }
            }
            if problem.fields.is_empty() {
                Ok(pairs)
            } else {
                Err(problem)
            }
        }
        "application/x-www-form-urlencoded" => serde_urlencoded::from_bytes(bytes)
            .map_err(|e| unprocessable(&format!("the form cannot be decoded: {e}"))),
        _ => Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send application/json or application/x-www-form-urlencoded",
        )),
    }
}

/// A JSON object's members in their order, a key given twice kept twice.
struct Members(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// Checks every field and names each bad one; returns the form and the ack address.
pub(super) fn validate(pairs: Vec<(String, String)>) -> Result<(form::Form, String), Problem> {
    let mut problems = BTreeMap::new();
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in pairs {
        let name = key.trim().to_ascii_lowercase();
        if !FIELDS.contains(&name.as_str()) {
            let shown: String = key.chars().take(64).collect();
            problems.insert(
                shown,
                format!("unknown field; the fields are {}", FIELDS.join(", ")),
            );
            continue;
        }
        if values.contains_key(&name) {
            problems.insert(name, "given twice".into());
            continue;
        }
        let value = value.trim();
        if value.chars().count() > MAX_VALUE_LEN {
            problems.insert(name, format!("longer than {MAX_VALUE_LEN} characters"));
        } else if value.chars().any(|c| c.is_control()) {
            problems.insert(name, "contains control characters".into());
        } else if !value.is_empty() {
            values.insert(name, value.to_string());
        }
    }
    match values.get("domain") {
        None if !problems.contains_key("domain") => {
            problems.insert(
                "domain".into(),
                "required: the domain name asked for".into(),
            );
        }
        Some(domain) => {
            if let Err(why) = form::check_domain(domain) {
                problems.insert("domain".into(), why);
            }
        }
        None => {}
    }
    match values.get("email") {
        None if !problems.contains_key("email") => {
            problems.insert(
                "email".into(),
                "required: the address the acknowledgement is sent to".into(),
            );
        }
        Some(email) if !is_address(email) => {
            problems.insert(
                "email".into(),
                "not an e-mail address like name@example.fr".into(),
            );
        }
        _ => {}
    }
    if !problems.is_empty() {
        let names: Vec<&str> = problems.keys().map(String::as_str).collect();
        let mut problem = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("request refused: invalid field(s): {}", names.join(", ")),
        );
        problem.fields = problems;
        return Err(problem);
    }
    let email = values.get("email").cloned().unwrap_or_default();
    let form = form::from_fields(values.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|why| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, why))?;
    Ok((form, email))
}

/// A plain `local@domain` address: no spaces, brackets or quotes, a valid domain.
fn is_address(text: &str) -> bool {
    let Some((local, domain)) = text.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
        && form::check_domain(domain).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_field_is_named() {
        let pairs = vec![
            ("domain".to_string(), "-bad-.fr".to_string()),
            ("email".to_string(), "nobody".to_string()),
            ("colour".to_string(), "blue".to_string()),
            ("holder".to_string(), "a\u{7}b".to_string()),
        ];
        let problem = validate(pairs).err().unwrap();
        let names: Vec<&str> = problem.fields.keys().map(String::as_str).collect();
        assert_eq!(names, ["colour", "domain", "email", "holder"]);
        let (form, email) = validate(vec![
            ("domain".into(), "Exemple.FR".into()),
            ("email".into(), "a@b.fr".into()),
            ("holder".into(), "".into()),
        ])
        .unwrap();
        assert_eq!(
            (form.domain.as_str(), email.as_str()),
            ("exemple.fr", "a@b.fr")
        );
        assert!(!form.fields.contains_key("holder"));
    }
}
