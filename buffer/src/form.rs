//! The request form (contract: Request format): `key: value` lines in the body of a request
//! mail, or the same fields posted over HTTP. `domain` is required and must be a domain name.

use std::collections::BTreeMap;

/// Bounds on a form, so a hostile body cannot make a huge row.
pub const MAX_FIELDS: usize = 32;
pub const MAX_KEY_LEN: usize = 64;
pub const MAX_VALUE_LEN: usize = 1000;

/// A validated request form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    /// The requested name, lowercased, without a trailing dot.
    pub domain: String,
    /// Every field, `domain` included, keys lowercased.
    pub fields: BTreeMap<String, String>,
}

/// Parses the body text of a request mail. Lines without a `key:` are ignored (signatures,
/// greetings); the raw message is kept anyway, so nothing is lost.
pub fn parse_body(body: &str) -> Result<Form, String> {
    let mut fields = BTreeMap::new();
    for line in body.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty()
            || key.len() > MAX_KEY_LEN
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            continue;
        }
        insert_field(&mut fields, key, value)?;
    }
    validate(fields)
}

/// Builds a form from named fields (the HTTP intake).
pub fn from_fields<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Form, String> {
    let mut fields = BTreeMap::new();
    for (key, value) in pairs {
        insert_field(&mut fields, key, value)?;
    }
    validate(fields)
}

fn insert_field(
    fields: &mut BTreeMap<String, String>,
    key: &str,
    value: &str,
) -> Result<(), String> {
    let key = key.trim().to_ascii_lowercase();
    let value = value.trim();
    if value.chars().count() > MAX_VALUE_LEN {
        return Err(format!(
            "field `{key}` is longer than {MAX_VALUE_LEN} characters"
        ));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(format!("field `{key}` contains control characters"));
    }
    if fields.contains_key(&key) {
        return Err(format!("field `{key}` is given twice"));
    }
    if fields.len() == MAX_FIELDS {
        return Err(format!("more than {MAX_FIELDS} fields"));
    }
    fields.insert(key, value.to_string());
    Ok(())
}

fn validate(mut fields: BTreeMap<String, String>) -> Result<Form, String> {
    let Some(domain) = fields.get("domain") else {
        return Err("the request has no `domain:` field".into());
    };
    let domain = check_domain(domain)?;
    fields.insert("domain".into(), domain.clone());
    Ok(Form { domain, fields })
}

/// Checks that `name` is a syntactically valid domain name (RFC 1035 §2.3.1 as relaxed by RFC 1123,
/// with internationalized letters allowed): at least two labels, each 1–63 letters, digits or
/// hyphens, not starting or ending with a hyphen, 253 characters at most.
pub fn check_domain(name: &str) -> Result<String, String> {
    let name = name.trim().trim_end_matches('.').to_lowercase();
    let shown = Shown(&name);
    if name.is_empty() {
        return Err("the `domain` field is empty".into());
    }
    if name.len() > 253 {
        return Err(format!("domain `{shown}…` is longer than 253 characters"));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return Err(format!(
            "domain `{shown}` needs at least two labels (like exemple.fr)"
        ));
    }
    for label in &labels {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("domain `{shown}` has an empty or over-long label"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "domain `{shown}`: a label cannot start or end with `-`"
            ));
        }
        if !label.chars().all(|c| c.is_alphanumeric() || c == '-') {
            return Err(format!(
                "domain `{shown}` has a character that is not a letter, digit or `-`"
            ));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!("domain `{shown}` ends in a numeric label"));
    }
    Ok(name)
}

/// The first 80 characters of a name, as an error shows it; made only for an error.
struct Shown<'a>(&'a str);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        self.0.chars().take(80).try_for_each(|c| f.write_char(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_form_and_ignores_prose() {
        let form =
            parse_body("Bonjour,\r\ndomain: Exemple.FR.\r\nholder: Jeanne: Durand\r\n-- \r\n")
                .unwrap();
        assert_eq!(form.domain, "exemple.fr");
        assert_eq!(form.fields["holder"], "Jeanne: Durand");
    }

    #[test]
    fn refusals_name_the_problem() {
        assert!(
            parse_body("holder: x")
                .unwrap_err()
                .contains("no `domain:`")
        );
        assert!(
            parse_body("domain: a.fr\ndomain: b.fr")
                .unwrap_err()
                .contains("twice")
        );
        for bad in [
            "",
            "fr",
            "a..fr",
            "-a.fr",
            "a-.fr",
            "a_b.fr",
            "a.123",
            &"a".repeat(64),
        ] {
            assert!(check_domain(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(check_domain("café.fr").unwrap(), "café.fr");
        assert_eq!(check_domain("xn--caf-dma.fr").unwrap(), "xn--caf-dma.fr");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_body_parses_or_names_a_problem(body in ".{0,400}") {
            if let Ok(form) = parse_body(&body) {
                prop_assert_eq!(check_domain(&form.domain), Ok(form.domain.clone()));
                prop_assert!(form.fields.len() <= MAX_FIELDS);
            }
        }

        #[test]
        fn valid_names_survive_surrounding_prose(label in "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", prose in "[^\r\n:]{0,50}") {
            let body = format!("{prose}\r\ndomain: {label}.fr\r\n{prose}\r\n");
            prop_assert_eq!(parse_body(&body).unwrap().domain, format!("{label}.fr"));
        }
    }
}
