//! Griffin's webhook signatures (Griffin → us): RFC 9421 HTTP Message Signatures with ES512
//! (ECDSA over P-521 with SHA-512) keys that Griffin publishes as a JWKS at
//! `GET /v0/security/public-keys`.
//!
//! Each webhook carries
//!
//! ```text
//! signature-input: <kid>=("date" "@method" "@path" "@authority" "content-type" "content-length" "content-digest");created=…;expires=…;nonce="…";keyid="<kid>"
//! signature: <kid>=:<base64>:
//! ```
//!
//! The label is the key's `kid`, not `sig1`. Verification rebuilds the RFC 9421 signature
//! base from the covered components, checks `Content-Digest` against the raw body, checks
//! `expires`, and verifies the signature with the key named by `keyid`.
//!
//! Two details are UNCONFIRMED in Griffin's docs and are therefore accepted either way here
//! (and configurable in the simulator): the digest algorithm of `Content-Digest` (`sha-512`
//! or `sha-256`, RFC 9530) and the encoding of the ECDSA signature (raw `r‖s`, 132 bytes, as
//! RFC 9421 and JWS specify, or ASN.1 DER).
//!
//! [`WebhookSigner`] is the other half, used by the simulator (and usable by tests) to sign
//! exactly what a verifier checks.

use std::collections::HashMap;
use std::fmt;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{DateTime, Utc};
use p521::ecdsa::signature::{Signer, Verifier};
use p521::ecdsa::{Signature, SigningKey, VerifyingKey};
use reqwest::header::HeaderMap;
use serde::Deserialize;
use sha2::{Digest, Sha256, Sha512};

use crate::resources::{Jwk, Jwks};

/// The components Griffin's webhooks cover, in Griffin's order.
pub const WEBHOOK_COMPONENTS: [&str; 7] = [
    "date",
    "@method",
    "@path",
    "@authority",
    "content-type",
    "content-length",
    "content-digest",
];

/// Components a signature must cover for us to trust it: without these, the body, target or
/// method could be swapped under a valid signature.
const REQUIRED_COMPONENTS: [&str; 4] = ["@method", "@path", "@authority", "content-digest"];

/// How far a `created` may lie in the future (clock skew between Griffin and us).
pub const CLOCK_SKEW_SECONDS: i64 = 60;

/// The size of a raw `r‖s` ES512 signature: two 66-byte P-521 scalars.
const RAW_SIGNATURE_BYTES: usize = 132;
/// The size of one P-521 coordinate.
const COORDINATE_BYTES: usize = 66;

/// The hash of `Content-Digest` (RFC 9530).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DigestAlgorithm {
    Sha256,
    #[default]
    Sha512,
}

impl DigestAlgorithm {
    fn label(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256 => "sha-256",
            DigestAlgorithm::Sha512 => "sha-512",
        }
    }

    fn digest(self, body: &[u8]) -> Vec<u8> {
        match self {
            DigestAlgorithm::Sha256 => Sha256::digest(body).to_vec(),
            DigestAlgorithm::Sha512 => Sha512::digest(body).to_vec(),
        }
    }

    /// The `Content-Digest` header value for `body`: `sha-512=:<base64>:`.
    pub fn content_digest(self, body: &[u8]) -> String {
        format!("{}=:{}:", self.label(), STANDARD.encode(self.digest(body)))
    }
}

/// How the ECDSA signature's bytes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureEncoding {
    /// `r‖s`, fixed width (RFC 9421 §3.3.4, JWS).
    #[default]
    Raw,
    /// ASN.1 DER `SEQUENCE { r, s }`.
    Der,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookSignatureError {
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    #[error("the {header} header is malformed: {reason}")]
    Malformed {
        header: &'static str,
        reason: String,
    },
    #[error("no signature label is present in both signature-input and signature")]
    NoMatchingLabel,
    /// Refresh the JWKS and try again: Griffin may have rotated to a new key.
    #[error("no public key with kid {0:?}")]
    UnknownKey(String),
    #[error("the signature does not cover {0}")]
    ComponentNotCovered(&'static str),
    #[error("the covered header {0} is missing")]
    CoveredHeaderMissing(String),
    #[error("the signature expired at {expires} (now {now})")]
    Expired { expires: i64, now: i64 },
    #[error("the signature was created in the future ({created}, now {now})")]
    CreatedInFuture { created: i64, now: i64 },
    #[error("Content-Digest names no algorithm we know (sha-512, sha-256)")]
    UnsupportedDigest,
    #[error("the body does not match Content-Digest")]
    ContentDigestMismatch,
    #[error("the content-length header does not match the body")]
    ContentLengthMismatch,
    #[error("the signature does not verify")]
    BadSignature,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key {kid:?} is not an EC P-521 key")]
    NotP521 { kid: String },
    #[error("key {kid:?} has a malformed coordinate")]
    BadCoordinate { kid: String },
    #[error("key {kid:?} is not a point on P-521")]
    NotOnCurve { kid: String },
}

/// Griffin's webhook public keys by `kid`. A `kid` never changes its key, so keys are only
/// ever added; a retired key disappearing from the JWKS does not remove it here.
#[derive(Clone, Default)]
pub struct WebhookKeys {
    keys: HashMap<String, VerifyingKey>,
}

impl fmt::Debug for WebhookKeys {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("WebhookKeys")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl WebhookKeys {
    /// The P-521 keys of a JWKS. Keys of other kinds are skipped (Griffin may publish more
    /// kinds later); a P-521 key that does not decode is an error.
    pub fn from_jwks(jwks: &Jwks) -> Result<Self, KeyError> {
        let mut keys = Self::default();
        keys.merge(jwks)?;
        Ok(keys)
    }

    /// Adds the P-521 keys of `jwks` that are not known yet.
    pub fn merge(&mut self, jwks: &Jwks) -> Result<(), KeyError> {
        for jwk in &jwks.keys {
            if jwk.kty != "EC" || jwk.crv.as_deref() != Some("P-521") {
                continue;
            }
            if self.keys.contains_key(&jwk.kid) {
                continue;
            }
            let key = verifying_key_from_jwk(jwk)?;
            self.keys.insert(jwk.kid.clone(), key);
        }
        Ok(())
    }

    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }
}

fn verifying_key_from_jwk(jwk: &Jwk) -> Result<VerifyingKey, KeyError> {
    let coordinate = |value: &Option<String>| -> Result<Vec<u8>, KeyError> {
        let bytes = value
            .as_deref()
            .and_then(|text| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok())
            .ok_or_else(|| KeyError::BadCoordinate {
                kid: jwk.kid.clone(),
            })?;
        if bytes.len() != COORDINATE_BYTES {
            return Err(KeyError::BadCoordinate {
                kid: jwk.kid.clone(),
            });
        }
        Ok(bytes)
    };
    let mut point = Vec::with_capacity(1 + 2 * COORDINATE_BYTES);
    point.push(0x04);
    point.extend(coordinate(&jwk.x)?);
    point.extend(coordinate(&jwk.y)?);
    VerifyingKey::from_sec1_bytes(&point).map_err(|_| KeyError::NotOnCurve {
        kid: jwk.kid.clone(),
    })
}

/// A webhook request as our receiver got it. `authority` is the `Host` it was sent to (what
/// `@authority` covers), `path` the request path without the query.
#[derive(Debug, Clone, Copy)]
pub struct IncomingWebhook<'a> {
    pub method: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

impl<'a> IncomingWebhook<'a> {
    /// From a request's method, target (`/path?query`, as in axum's `uri.path_and_query()`),
    /// headers and raw body, taking `@authority` from the `Host` header.
    pub fn from_parts(
        method: &'a str,
        path_and_query: &'a str,
        headers: &'a HeaderMap,
        body: &'a [u8],
    ) -> Self {
        let authority = headers
            .get("host")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        Self {
            method,
            authority,
            path,
            query,
            headers,
            body,
        }
    }
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    pub kid: String,
    pub created: Option<i64>,
    pub expires: Option<i64>,
    pub nonce: Option<String>,
}

/// Verifies a webhook's signature, its `Content-Digest` against the raw body, and its expiry
/// against `now`. Answer 2xx quickly and process asynchronously, as Griffin advises; note
/// that delivery is at least once and may be out of order, so deduplicate on `event-url`.
pub fn verify_webhook(
    keys: &WebhookKeys,
    request: &IncomingWebhook<'_>,
    now: DateTime<Utc>,
) -> Result<VerifiedSignature, WebhookSignatureError> {
    let inputs = header_text(request.headers, "signature-input")?;
    let signatures = header_text(request.headers, "signature")?;
    let inputs = parse_dictionary(&inputs, "signature-input")?;
    let signatures = parse_dictionary(&signatures, "signature")?;

    // Prefer a label whose key we hold; otherwise report the first unknown kid so that the
    // caller can refresh the JWKS.
    let mut unknown_kid = None;
    let mut chosen = None;
    for (label, input) in &inputs {
        let Some((_, signature)) = signatures.iter().find(|(name, _)| name == label) else {
            continue;
        };
        let params = SignatureParams::parse(input)?;
        let kid = params.keyid.clone().unwrap_or_else(|| label.clone());
        if keys.get(&kid).is_some() {
            chosen = Some((kid, params, signature.clone()));
            break;
        }
        unknown_kid.get_or_insert(kid);
    }
    let Some((kid, params, signature)) = chosen else {
        return Err(match unknown_kid {
            Some(kid) => WebhookSignatureError::UnknownKey(kid),
            None => WebhookSignatureError::NoMatchingLabel,
        });
    };

    for required in REQUIRED_COMPONENTS {
        if !params.components.iter().any(|name| name == required) {
            return Err(WebhookSignatureError::ComponentNotCovered(required));
        }
    }
    let now = now.timestamp();
    if let Some(expires) = params.expires {
        if now > expires {
            return Err(WebhookSignatureError::Expired { expires, now });
        }
    }
    if let Some(created) = params.created {
        if created > now + CLOCK_SKEW_SECONDS {
            return Err(WebhookSignatureError::CreatedInFuture { created, now });
        }
    }
    check_content_digest(request.headers, request.body)?;
    if let Some(length) = request.headers.get("content-length") {
        let length = length
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse().ok());
        if length != Some(request.body.len()) {
            return Err(WebhookSignatureError::ContentLengthMismatch);
        }
    }

    let base = signature_base(
        &params.components,
        &params.raw,
        &RequestComponents {
            method: request.method,
            authority: request.authority,
            path: request.path,
            query: request.query,
            headers: request.headers,
        },
    )?;
    let signature_bytes =
        parse_byte_sequence(&signature).ok_or(WebhookSignatureError::Malformed {
            header: "signature",
            reason: "not a byte sequence (:base64:)".to_string(),
        })?;
    let signature = if signature_bytes.len() == RAW_SIGNATURE_BYTES {
        Signature::from_slice(&signature_bytes)
    } else {
        Signature::from_der(&signature_bytes)
    }
    .map_err(|_| WebhookSignatureError::BadSignature)?;
    let key = keys
        .get(&kid)
        .ok_or_else(|| WebhookSignatureError::UnknownKey(kid.clone()))?;
    key.verify(base.as_bytes(), &signature)
        .map_err(|_| WebhookSignatureError::BadSignature)?;
    Ok(VerifiedSignature {
        kid,
        created: params.created,
        expires: params.expires,
        nonce: params.nonce,
    })
}

fn header_text(headers: &HeaderMap, name: &'static str) -> Result<String, WebhookSignatureError> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .map(|value| value.to_str())
        .collect::<Result<_, _>>()
        .map_err(|_| WebhookSignatureError::Malformed {
            header: name,
            reason: "not visible ASCII".to_string(),
        })?;
    if values.is_empty() {
        return Err(WebhookSignatureError::MissingHeader(name));
    }
    Ok(values.join(", "))
}

fn check_content_digest(headers: &HeaderMap, body: &[u8]) -> Result<(), WebhookSignatureError> {
    let header = header_text(headers, "content-digest")?;
    let mut checked_any = false;
    for (algorithm, value) in parse_dictionary(&header, "content-digest")? {
        let algorithm = match algorithm.as_str() {
            "sha-512" => DigestAlgorithm::Sha512,
            "sha-256" => DigestAlgorithm::Sha256,
            _ => continue,
        };
        let expected =
            parse_byte_sequence(&value).ok_or_else(|| WebhookSignatureError::Malformed {
                header: "content-digest",
                reason: "not a byte sequence (:base64:)".to_string(),
            })?;
        if algorithm.digest(body) != expected {
            return Err(WebhookSignatureError::ContentDigestMismatch);
        }
        checked_any = true;
    }
    if checked_any {
        Ok(())
    } else {
        Err(WebhookSignatureError::UnsupportedDigest)
    }
}

/// The parameters of one signature: `("c1" "c2");created=…;expires=…;nonce="…";keyid="…"`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SignatureParams {
    components: Vec<String>,
    created: Option<i64>,
    expires: Option<i64>,
    nonce: Option<String>,
    keyid: Option<String>,
    /// The serialised value exactly as received, which is `@signature-params`.
    raw: String,
}

impl SignatureParams {
    fn parse(raw: &str) -> Result<Self, WebhookSignatureError> {
        let malformed = |reason: &str| WebhookSignatureError::Malformed {
            header: "signature-input",
            reason: reason.to_string(),
        };
        let raw = raw.trim();
        let inner = raw
            .strip_prefix('(')
            .ok_or_else(|| malformed("a signature's value must start with '('"))?;
        let close = inner
            .find(')')
            .ok_or_else(|| malformed("the component list is not closed"))?;
        let components = inner[..close]
            .split_whitespace()
            .map(|item| {
                item.strip_prefix('"')
                    .and_then(|item| item.strip_suffix('"'))
                    .map(str::to_string)
                    .ok_or_else(|| malformed("a component name is not a quoted string"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut params = Self {
            components,
            created: None,
            expires: None,
            nonce: None,
            keyid: None,
            raw: raw.to_string(),
        };
        for parameter in split_outside_quotes(&inner[close + 1..], ';') {
            let parameter = parameter.trim();
            if parameter.is_empty() {
                continue;
            }
            let (name, value) = parameter.split_once('=').unwrap_or((parameter, "?1"));
            let text = value.trim_matches('"').to_string();
            match name.trim() {
                "created" => params.created = Some(text.parse().map_err(|_| malformed("created"))?),
                "expires" => params.expires = Some(text.parse().map_err(|_| malformed("expires"))?),
                "nonce" => params.nonce = Some(text),
                "keyid" => params.keyid = Some(text),
                _ => {}
            }
        }
        Ok(params)
    }
}

/// The request's derivable parts, shared by signing and verification.
struct RequestComponents<'a> {
    method: &'a str,
    authority: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    headers: &'a HeaderMap,
}

/// RFC 9421 §2.5: one line per covered component, then `"@signature-params": …`.
fn signature_base(
    components: &[String],
    signature_params: &str,
    request: &RequestComponents<'_>,
) -> Result<String, WebhookSignatureError> {
    let mut base = String::new();
    for name in components {
        let value = match name.as_str() {
            "@method" => request.method.to_ascii_uppercase(),
            "@authority" => request.authority.to_ascii_lowercase(),
            "@path" => {
                if request.path.is_empty() {
                    "/".to_string()
                } else {
                    request.path.to_string()
                }
            }
            "@query" => format!("?{}", request.query.unwrap_or("")),
            header if !header.starts_with('@') => {
                let values: Vec<String> = request
                    .headers
                    .get_all(header)
                    .iter()
                    .filter_map(|value| value.to_str().ok())
                    .map(|value| value.trim().to_string())
                    .collect();
                if values.is_empty() {
                    return Err(WebhookSignatureError::CoveredHeaderMissing(
                        header.to_string(),
                    ));
                }
                values.join(", ")
            }
            _ => {
                return Err(WebhookSignatureError::Malformed {
                    header: "signature-input",
                    reason: format!("unsupported derived component {name}"),
                })
            }
        };
        base.push_str(&format!("\"{name}\": {value}\n"));
    }
    base.push_str(&format!("\"@signature-params\": {signature_params}"));
    Ok(base)
}

/// A structured-field dictionary as `(key, raw value)` pairs, split on top-level commas.
fn parse_dictionary(
    text: &str,
    header: &'static str,
) -> Result<Vec<(String, String)>, WebhookSignatureError> {
    split_outside_quotes(text, ',')
        .into_iter()
        .filter(|member| !member.trim().is_empty())
        .map(|member| {
            let member = member.trim();
            member
                .split_once('=')
                .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
                .ok_or_else(|| WebhookSignatureError::Malformed {
                    header,
                    reason: format!("member {member:?} has no value"),
                })
        })
        .collect()
}

/// Splits on `separator` outside quoted strings and parentheses.
fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut depth, mut quoted, mut escaped) = (0, 0usize, false, false);
    for (index, character) in text.char_indices() {
        if quoted {
            match character {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => {}
            }
            continue;
        }
        match character {
            '"' => quoted = true,
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if character == separator && depth == 0 => {
                parts.push(&text[start..index]);
                start = index + character.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// `:<base64>:` → bytes.
fn parse_byte_sequence(value: &str) -> Option<Vec<u8>> {
    let inner = value.trim().strip_prefix(':')?.strip_suffix(':')?;
    STANDARD.decode(inner).ok()
}

/// Signs webhooks the way Griffin does. The simulator holds one; tests may too.
#[derive(Clone)]
pub struct WebhookSigner {
    kid: String,
    key: SigningKey,
    pub digest: DigestAlgorithm,
    pub encoding: SignatureEncoding,
    pub validity_seconds: i64,
}

impl fmt::Debug for WebhookSigner {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("WebhookSigner")
            .field("kid", &self.kid)
            .field("key", &"[redacted]")
            .field("digest", &self.digest)
            .field("encoding", &self.encoding)
            .finish()
    }
}

/// The headers that carry a signed webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub date: String,
    pub content_type: String,
    pub content_length: String,
    pub content_digest: String,
    pub signature_input: String,
    pub signature: String,
}

impl SignedHeaders {
    pub fn pairs(&self) -> [(&'static str, &str); 6] {
        [
            ("date", &self.date),
            ("content-type", &self.content_type),
            ("content-length", &self.content_length),
            ("content-digest", &self.content_digest),
            ("signature-input", &self.signature_input),
            ("signature", &self.signature),
        ]
    }
}

impl WebhookSigner {
    /// A fresh random P-521 key under `kid`.
    pub fn generate(kid: impl Into<String>) -> Self {
        let key = loop {
            let mut bytes = [0u8; COORDINATE_BYTES];
            rand::Rng::fill(&mut rand::rng(), &mut bytes[..]);
            // A P-521 scalar has 521 bits: clear the top 7 of the 528.
            bytes[0] &= 0x01;
            if let Ok(key) = SigningKey::from_slice(&bytes) {
                break key;
            }
        };
        Self {
            kid: kid.into(),
            key,
            digest: DigestAlgorithm::default(),
            encoding: SignatureEncoding::default(),
            validity_seconds: 300,
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JWKS entry: `{"alg":"ES512","crv":"P-521","kid":…,"kty":"EC","use":"sig","x":…,"y":…}`.
    pub fn jwk(&self) -> Jwk {
        let point = VerifyingKey::from(&self.key).to_encoded_point(false);
        let bytes = point.as_bytes();
        Jwk {
            kty: "EC".to_string(),
            crv: Some("P-521".to_string()),
            alg: Some("ES512".to_string()),
            kid: self.kid.clone(),
            key_use: Some("sig".to_string()),
            x: Some(URL_SAFE_NO_PAD.encode(&bytes[1..1 + COORDINATE_BYTES])),
            y: Some(URL_SAFE_NO_PAD.encode(&bytes[1 + COORDINATE_BYTES..])),
        }
    }

    /// Signs a JSON POST of `body` to `destination`, covering Griffin's components.
    pub fn sign(
        &self,
        destination: &reqwest::Url,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> SignedHeaders {
        let authority = match destination.port() {
            Some(port) => format!("{}:{port}", destination.host_str().unwrap_or("")),
            None => destination.host_str().unwrap_or("").to_string(),
        };
        let created = now.timestamp();
        let components = WEBHOOK_COMPONENTS
            .iter()
            .map(|name| format!("\"{name}\""))
            .collect::<Vec<_>>()
            .join(" ");
        let params = format!(
            "({components});created={created};expires={};nonce=\"{}\";keyid=\"{}\"",
            created + self.validity_seconds,
            uuid::Uuid::new_v4(),
            self.kid
        );
        let headers = SignedHeaders {
            date: now.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
            content_type: "application/json".to_string(),
            content_length: body.len().to_string(),
            content_digest: self.digest.content_digest(body),
            signature_input: format!("{}={params}", self.kid),
            signature: String::new(),
        };
        let mut header_map = HeaderMap::new();
        for (name, value) in headers.pairs() {
            if let Ok(value) = value.parse() {
                header_map.insert(name, value);
            }
        }
        let component_names: Vec<String> = WEBHOOK_COMPONENTS
            .iter()
            .map(|name| name.to_string())
            .collect();
        let base = signature_base(
            &component_names,
            &params,
            &RequestComponents {
                method: "POST",
                authority: &authority,
                path: destination.path(),
                query: destination.query(),
                headers: &header_map,
            },
        )
        .expect("every component Griffin covers is set above");
        let signature: Signature = self.key.sign(base.as_bytes());
        let signature_bytes = match self.encoding {
            SignatureEncoding::Raw => signature.to_bytes().to_vec(),
            SignatureEncoding::Der => signature.to_der().as_bytes().to_vec(),
        };
        SignedHeaders {
            signature: format!("{}=:{}:", self.kid, STANDARD.encode(signature_bytes)),
            ..headers
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed_request(
        signer: &WebhookSigner,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> (HeaderMap, &'static str) {
        let url: reqwest::Url = "http://127.0.0.1:4000/hooks/griffin".parse().unwrap();
        let signed = signer.sign(&url, body, now);
        let mut headers = HeaderMap::new();
        for (name, value) in signed.pairs() {
            headers.insert(name, value.parse().unwrap());
        }
        headers.insert("host", "127.0.0.1:4000".parse().unwrap());
        (headers, "/hooks/griffin")
    }

    fn keys_of(signer: &WebhookSigner) -> WebhookKeys {
        WebhookKeys::from_jwks(&Jwks {
            keys: vec![signer.jwk()],
            links: None,
        })
        .unwrap()
    }

    #[test]
    fn a_signed_body_verifies_in_every_configuration_and_a_changed_one_does_not() {
        for digest in [DigestAlgorithm::Sha512, DigestAlgorithm::Sha256] {
            for encoding in [SignatureEncoding::Raw, SignatureEncoding::Der] {
                let mut signer = WebhookSigner::generate("griffin-test-1");
                signer.digest = digest;
                signer.encoding = encoding;
                let keys = keys_of(&signer);
                let now = Utc::now();
                let body = br#"{"event-type":"test-event"}"#;
                let (headers, url) = signed_request(&signer, body, now);
                let incoming = IncomingWebhook::from_parts("POST", url, &headers, body);
                let verified = verify_webhook(&keys, &incoming, now).unwrap();
                assert_eq!(verified.kid, "griffin-test-1");

                let tampered = br#"{"event-type":"test-evenT"}"#;
                let incoming = IncomingWebhook::from_parts("POST", url, &headers, tampered);
                assert_eq!(
                    verify_webhook(&keys, &incoming, now),
                    Err(WebhookSignatureError::ContentDigestMismatch)
                );
            }
        }
    }

    #[test]
    fn expiry_unknown_keys_and_a_different_target_are_refused() {
        let signer = WebhookSigner::generate("griffin-test-1");
        let keys = keys_of(&signer);
        let now = Utc::now();
        let body = b"{}";
        let (headers, url) = signed_request(&signer, body, now);
        let incoming = IncomingWebhook::from_parts("POST", url, &headers, body);

        let later = now + chrono::Duration::seconds(301);
        assert!(matches!(
            verify_webhook(&keys, &incoming, later),
            Err(WebhookSignatureError::Expired { .. })
        ));
        let other = keys_of(&WebhookSigner::generate("griffin-test-2"));
        assert_eq!(
            verify_webhook(&other, &incoming, now),
            Err(WebhookSignatureError::UnknownKey(
                "griffin-test-1".to_string()
            ))
        );
        let mut moved = incoming;
        moved.path = "/hooks/other";
        assert_eq!(
            verify_webhook(&keys, &moved, now),
            Err(WebhookSignatureError::BadSignature)
        );
    }

    #[test]
    fn signature_input_has_griffins_shape() {
        let signer = WebhookSigner::generate("griffin-2025-05-23-1");
        let url: reqwest::Url = "https://example.com/hook".parse().unwrap();
        let signed = signer.sign(&url, b"{}", Utc::now());
        assert!(signed.signature_input.starts_with(
            "griffin-2025-05-23-1=(\"date\" \"@method\" \"@path\" \"@authority\" \"content-type\" \"content-length\" \"content-digest\");created="
        ));
        assert!(signed
            .signature_input
            .ends_with(";keyid=\"griffin-2025-05-23-1\""));
        assert!(signed.signature.starts_with("griffin-2025-05-23-1=:"));
        assert!(signed.content_digest.starts_with("sha-512=:"));
    }
}
