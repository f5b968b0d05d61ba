//! The ordered name/value list every Cardstream message is made of.
//!
//! Requests, responses, hosted forms and callbacks are all flat lists of fields. Nested
//! records (`threeDSRequest[creq]`) are kept flat, with the brackets in the name: the
//! signature sorts by *root* name only and keeps sub-fields in the order they were sent
//! (§1.4.1), which a stable sort of the flat list gives for free.

use std::fmt;

/// Field names whose values are card data. They are never echoed by the gateway, never
/// logged and never printed by `Debug`.
pub(crate) const CARD_DATA_FIELDS: [&str; 2] = ["cardNumber", "cardCVV"];

/// An ordered list of Cardstream fields.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Fields {
    pairs: Vec<(String, String)>,
}

impl Fields {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value`, keeping the field's position if it already exists (as a PHP
    /// array assignment does), otherwise appending it.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self
            .pairs
            .iter_mut()
            .find(|(existing, _)| *existing == name)
        {
            Some((_, existing_value)) => *existing_value = value,
            None => self.pairs.push((name, value)),
        }
    }

    /// Sets the field only when a value is given: PHP's `http_build_query` skips nulls, so an
    /// absent optional field must not appear at all (an empty string would be signed).
    pub fn set_optional(&mut self, name: &str, value: Option<impl Into<String>>) {
        if let Some(value) = value {
            self.set(name, value);
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(existing, _)| existing == name)
            .map(|(_, value)| value.as_str())
    }

    /// The value, unless it is absent or empty: most optional request fields treat an empty
    /// value as not sent.
    pub fn get_non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|value| !value.is_empty())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn remove(&mut self, name: &str) -> Option<String> {
        let position = self
            .pairs
            .iter()
            .position(|(existing, _)| existing == name)?;
        Some(self.pairs.remove(position).1)
    }

    /// Removes every field of a nested record (`root[...]`) and the plain `root` field.
    pub fn remove_root(&mut self, root: &str) {
        self.pairs.retain(|(name, _)| root_name(name) != root);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The sub-fields of a nested record, in the order they were sent: for `root`
    /// `threeDSRequest`, the field `threeDSRequest[creq]` yields `("creq", value)`.
    pub fn record(&self, root: &str) -> Vec<(String, String)> {
        self.pairs
            .iter()
            .filter_map(|(name, value)| {
                let rest = name.strip_prefix(root)?.strip_prefix('[')?;
                let sub_name = rest.strip_suffix(']').unwrap_or(rest);
                Some((sub_name.to_string(), value.clone()))
            })
            .collect()
    }

    /// Parses a form-urlencoded body the way PHP's `parse_str` fills `$_POST`, as far as the
    /// protocol needs: `+` and `%XX` are decoded, and a repeated name keeps its first position
    /// with the last value. Invalid UTF-8 is replaced rather than refused, because the
    /// signature check that follows will refuse a message that was altered.
    pub fn parse(body: &[u8]) -> Self {
        let mut fields = Self::new();
        for (name, value) in form_urlencoded::parse(body) {
            fields.set(name.into_owned(), value.into_owned());
        }
        fields
    }

    /// Serialises the fields in their current order exactly as PHP's
    /// `http_build_query($data, '', '&')` does. This is what goes on the wire, and, once
    /// sorted, what is signed.
    pub fn to_form_body(&self) -> String {
        let mut body = String::new();
        for (index, (name, value)) in self.pairs.iter().enumerate() {
            if index > 0 {
                body.push('&');
            }
            php_url_encode_into(name, &mut body);
            body.push('=');
            php_url_encode_into(value, &mut body);
        }
        body
    }

    /// The fields sorted by root name in ascending byte order, sub-fields of a record kept in
    /// their sent order (a stable sort). This is the order the signature hashes.
    pub(crate) fn sorted_by_root(&self) -> Fields {
        let mut pairs = self.pairs.clone();
        pairs.sort_by(|(left, _), (right, _)| {
            root_name(left).as_bytes().cmp(root_name(right).as_bytes())
        });
        Fields { pairs }
    }
}

impl<Name: Into<String>, Value: Into<String>> FromIterator<(Name, Value)> for Fields {
    fn from_iter<Iterator: IntoIterator<Item = (Name, Value)>>(iterator: Iterator) -> Self {
        let mut fields = Fields::new();
        for (name, value) in iterator {
            fields.set(name, value);
        }
        fields
    }
}

/// Card data is redacted so that a `Fields` value can be logged or asserted on safely.
impl fmt::Debug for Fields {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = formatter.debug_map();
        for (name, value) in &self.pairs {
            if CARD_DATA_FIELDS.contains(&name.as_str()) {
                map.entry(name, &"[redacted]");
            } else {
                map.entry(name, value);
            }
        }
        map.finish()
    }
}

/// The root of a possibly nested field name: the part before the first `[`.
pub fn root_name(name: &str) -> &str {
    name.split('[').next().unwrap_or(name)
}

/// PHP `urlencode` (RFC 1738 form encoding): alphanumerics and `-_.` stay, a space becomes
/// `+`, and every other byte of the UTF-8 encoding becomes `%XX` with uppercase hex. This
/// differs from the WHATWG form encoding (which leaves `*` alone) and from `rawurlencode`
/// (which leaves `~` alone), so neither `form_urlencoded` nor `percent-encoding`'s sets give
/// the bytes the signature needs.
pub fn php_url_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    php_url_encode_into(text, &mut encoded);
    encoded
}

fn php_url_encode_into(text: &str, output: &mut String) {
    const HEX_DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in text.as_bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                output.push(byte as char)
            }
            b' ' => output.push('+'),
            _ => {
                output.push('%');
                output.push(HEX_DIGITS[usize::from(byte >> 4)] as char);
                output.push(HEX_DIGITS[usize::from(byte & 0x0F)] as char);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_php_http_build_query() {
        assert_eq!(php_url_encode("a b*~!'()£"), "a+b%2A%7E%21%27%28%29%C2%A3");
        assert_eq!(php_url_encode("x[y]"), "x%5By%5D");
        assert_eq!(php_url_encode("-_.AZaz09"), "-_.AZaz09");
    }

    #[test]
    fn parse_keeps_first_position_and_last_value() {
        let fields = Fields::parse(b"a=1&b=x+y&a=2&c%5Bd%5D=%C2%A3");
        let pairs: Vec<_> = fields.iter().collect();
        assert_eq!(pairs, vec![("a", "2"), ("b", "x y"), ("c[d]", "£")]);
    }

    #[test]
    fn debug_redacts_card_data() {
        let fields: Fields = [
            ("cardNumber", "4929421234600821"),
            ("cardCVV", "356"),
            ("amount", "1"),
        ]
        .into_iter()
        .collect();
        let printed = format!("{fields:?}");
        assert!(!printed.contains("4929421234600821"));
        assert!(!printed.contains("356"));
        assert!(printed.contains("amount"));
    }

    #[test]
    fn record_lists_sub_fields_in_order() {
        let fields: Fields = [
            ("threeDSRequest[creq]", "abc"),
            ("other", "x"),
            ("threeDSRequest[extra]", "y"),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            fields.record("threeDSRequest"),
            vec![
                ("creq".to_string(), "abc".to_string()),
                ("extra".to_string(), "y".to_string())
            ]
        );
    }
}
