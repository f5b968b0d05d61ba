//! Message signatures (CARDSTREAM.md §1.4): SHA-512 over the PHP-encoded, root-sorted fields
//! followed by the secret, as lowercase hex; optionally `hash|field,list` for a partial
//! signature. Requests, responses, hosted returns and callbacks all use the same algorithm.

use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::fields::{root_name, Fields};

/// The field that carries the signature; it is never part of what is signed.
pub const SIGNATURE_FIELD: &str = "signature";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The SDK's first rule: a signed message when we hold no secret means the two sides are
    /// configured differently.
    #[error("the message is signed but no secret is configured")]
    UnexpectedSignature,
    /// The SDK's second rule: we hold a secret, so an unsigned message cannot be trusted.
    #[error("the message is not signed but a secret is configured")]
    Missing,
    /// The SDK's third rule: forged, altered, or signed with another secret.
    #[error("the signature does not match the message")]
    Mismatch,
}

/// The text that is hashed, before the secret is appended: every field except `signature`,
/// sorted by root name, PHP-encoded, with line endings normalised to `%0A`.
pub fn signing_text(fields: &Fields) -> String {
    let mut unsigned = fields.clone();
    unsigned.remove(SIGNATURE_FIELD);
    normalise_line_endings(&unsigned.sorted_by_root().to_form_body())
}

/// Signs every field except `signature`.
pub fn sign(fields: &Fields, secret: &str) -> String {
    hash_with_secret(&signing_text(fields), secret)
}

/// Signs only the fields whose root name is listed and returns `hash|root,names`. The list
/// names the roots in the order they occur in `fields`, as the PHP SDK builds it.
pub fn sign_partial(fields: &Fields, secret: &str, roots: &[&str]) -> String {
    let selected = select_roots(fields, roots);
    let mut listed: Vec<&str> = Vec::new();
    for (name, _) in selected.iter() {
        let root = root_name(name);
        if !listed.contains(&root) {
            listed.push(root);
        }
    }
    format!("{}|{}", sign(&selected, secret), listed.join(","))
}

/// Verifies a received message with the SDK's three rules and returns the fields the
/// signature vouches for, without `signature`.
///
/// With a partial signature only the listed fields are returned: a field the signature does
/// not cover could have been added by anyone, so it must not reach the caller. (Otherwise a
/// hosted request's partial signature, visible in the browser, could be replayed with an
/// invented `responseCode` as a fake result.)
pub fn verify(fields: &Fields, secret: Option<&str>) -> Result<Fields, SignatureError> {
    let signature = fields.get_non_empty(SIGNATURE_FIELD);
    let secret = secret.filter(|secret| !secret.is_empty());
    let mut unsigned = fields.clone();
    unsigned.remove(SIGNATURE_FIELD);
    match (secret, signature) {
        (None, None) => Ok(unsigned),
        (None, Some(_)) => Err(SignatureError::UnexpectedSignature),
        (Some(_), None) => Err(SignatureError::Missing),
        (Some(secret), Some(signature)) => {
            let (received_hash, signed_fields) = match signature.split_once('|') {
                Some((hash, list)) => {
                    let roots: Vec<&str> = list.split(',').collect();
                    (hash, select_roots(&unsigned, &roots))
                }
                None => (signature, unsigned),
            };
            let expected_hash = sign(&signed_fields, secret);
            if bool::from(expected_hash.as_bytes().ct_eq(received_hash.as_bytes())) {
                Ok(signed_fields)
            } else {
                Err(SignatureError::Mismatch)
            }
        }
    }
}

fn select_roots(fields: &Fields, roots: &[&str]) -> Fields {
    fields
        .iter()
        .filter(|(name, _)| roots.contains(&root_name(name)))
        .collect()
}

fn hash_with_secret(text: &str, secret: &str) -> String {
    let mut hasher = Sha512::new();
    hasher.update(text.as_bytes());
    hasher.update(secret.as_bytes());
    hex::encode(hasher.finalize())
}

/// Replaces `%0D%0A`, `%0A%0D` and `%0D` with `%0A`, case-insensitively, in one left-to-right
/// pass as the current PHP SDK's `preg_replace('/%0D%0A|%0A%0D|%0D/i', '%0A', …)` does, so
/// that a CR LF turned into LF by a browser form does not break the signature.
fn normalise_line_endings(encoded: &str) -> String {
    let bytes = encoded.as_bytes();
    let mut output = String::with_capacity(encoded.len());
    let mut index = 0;
    while index < bytes.len() {
        let rest = &bytes[index..];
        if starts_with_ignoring_case(rest, b"%0D%0A") || starts_with_ignoring_case(rest, b"%0A%0D")
        {
            output.push_str("%0A");
            index += 6;
        } else if starts_with_ignoring_case(rest, b"%0D") {
            output.push_str("%0A");
            index += 3;
        } else {
            // The encoded text is ASCII (it came out of the PHP encoder), so a byte is a char.
            output.push(char::from(bytes[index]));
            index += 1;
        }
    }
    output
}

fn starts_with_ignoring_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.len() >= needle.len() && haystack[..needle.len()].eq_ignore_ascii_case(needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_endings_normalise_in_one_pass() {
        assert_eq!(
            normalise_line_endings("a%0D%0Ab%0a%0dc%0Dd%0Ae"),
            "a%0Ab%0Ac%0Ad%0Ae"
        );
    }

    #[test]
    fn partial_signature_returns_only_signed_fields() {
        let fields: Fields = [("a", "1"), ("b", "2"), ("c[x]", "3")]
            .into_iter()
            .collect();
        let mut signed = fields.clone();
        signed.set(
            SIGNATURE_FIELD,
            sign_partial(&fields, "secret", &["a", "c"]),
        );
        assert!(signed
            .get(SIGNATURE_FIELD)
            .is_some_and(|value| value.ends_with("|a,c")));
        signed.set("b", "changed");
        let verified = verify(&signed, Some("secret")).expect("the listed fields are intact");
        let names: Vec<_> = verified.iter().map(|(name, _)| name).collect();
        assert_eq!(names, vec!["a", "c[x]"]);
        signed.set("a", "changed");
        assert_eq!(
            verify(&signed, Some("secret")),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn three_sdk_rules() {
        let fields: Fields = [("a", "1")].into_iter().collect();
        let mut signed = fields.clone();
        signed.set(SIGNATURE_FIELD, sign(&fields, "secret"));
        assert_eq!(
            verify(&signed, None),
            Err(SignatureError::UnexpectedSignature)
        );
        assert_eq!(
            verify(&fields, Some("secret")),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(&signed, Some("other")),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(&signed, Some("secret")), Ok(fields));
    }
}
