//! Request parameters: `application/x-www-form-urlencoded` bodies and query strings with
//! Stripe's ("Rack-style") bracket nesting, turned into a [`ParamValue`] tree, and read by a
//! handler through [`Params`], whose typed `take_*` accessors remember what was read so
//! that [`Params::reject_unknown`] can refuse everything else.
//!
//! Encoding rules (see STRIPE-CONVENTIONS.md §1.1):
//! - `a=1` is a string; `a[b]=1`, `a[b][c]=1` are maps;
//! - arrays come as `a[]=x&a[]=y` (the docs' curl form) or `a[0]=x&a[1]=y` (what the SDKs
//!   send; indexes may arrive in any order and are read in numeric order);
//! - `a[][b]=x&a[][c]=y&a[][b]=z` is Rack's array of maps: a new element starts when the
//!   last one already has that key;
//! - an empty value means "unset" (`metadata[k]=` removes `k`, `metadata=` clears it);
//! - percent-decoding and `+` as space are `form_urlencoded`'s; brackets may be escaped.
//!
//! `a[0]` could be the first element of an array or the key `"0"` of a map (metadata keys
//! may be digits): the tree keeps it as a map key, and the accessor decides, as the
//! handler knows which one the parameter is.
//!
//! Everything is bounded: body bytes, parameter count, nesting depth, list length.
//!
//! Why not `serde_qs`: it deserialises into structs, which loses what we need here: which
//! keys the handler read (for Stripe's "Received unknown parameter: foo[bar]"), the
//! empty-string-unsets convention per field, and the map-or-array decision at read time.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, Method};

use super::error::ApiError;

/// Largest body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Most `key=value` pairs in one request (query string and body together).
pub const MAX_PARAMS: usize = 1_000;
/// Most bracket levels in one key: `a[b][c]` has 2.
pub const MAX_DEPTH: usize = 8;
/// Most elements in one array.
pub const MAX_LIST_LEN: usize = 250;
/// Stripe's metadata limits.
pub const MAX_METADATA_KEYS: usize = 50;
pub const MAX_METADATA_KEY_CHARS: usize = 40;
pub const MAX_METADATA_VALUE_CHARS: usize = 500;
/// Stripe's limit on `expand[]` depth (`a.b.c.d`).
pub const MAX_EXPAND_LEVELS: usize = 4;

/// One parsed parameter. `List` comes only from the `a[]` form; `a[0]` is a `Map` key.
#[derive(Clone, PartialEq, Eq)]
pub enum ParamValue {
    String(String),
    Map(BTreeMap<String, ParamValue>),
    List(Vec<ParamValue>),
}

/// Values are redacted: parameters carry card numbers and secrets, and a `Debug` print
/// must never put them in a log.
impl fmt::Debug for ParamValue {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::String(value) => write!(formatter, "<{} chars>", value.chars().count()),
            ParamValue::Map(map) => formatter.debug_map().entries(map.iter()).finish(),
            ParamValue::List(list) => formatter.debug_list().entries(list.iter()).finish(),
        }
    }
}

/// What `metadata`-like parameters ask for: clear everything, or set and remove keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapUpdate {
    /// `metadata=`: remove every key.
    Clear,
    /// `metadata[k]=v` sets `k` (`Some`), `metadata[k]=` removes it (`None`).
    Merge(BTreeMap<String, Option<String>>),
}

impl MapUpdate {
    /// Applies the update to the current map (an empty one on create).
    pub fn apply_to(&self, map: &mut BTreeMap<String, String>) {
        match self {
            MapUpdate::Clear => map.clear(),
            MapUpdate::Merge(changes) => {
                for (key, value) in changes {
                    match value {
                        Some(value) => {
                            map.insert(key.clone(), value.clone());
                        }
                        None => {
                            map.remove(key);
                        }
                    }
                }
            }
        }
    }
}

/// Parses one or more urlencoded inputs (e.g. the query string, then the body) into one
/// tree.
pub fn parse(inputs: &[&[u8]]) -> Result<BTreeMap<String, ParamValue>, ApiError> {
    let mut tree = BTreeMap::new();
    let mut count = 0usize;
    for input in inputs {
        for (key, value) in form_urlencoded::parse(input) {
            count += 1;
            if count > MAX_PARAMS {
                return Err(ApiError::invalid_request(format!(
                    "Too many parameters: at most {MAX_PARAMS} are accepted in one request."
                )));
            }
            let (name, segments) = split_key(&key)?;
            insert(&mut tree, &name, &segments, value.into_owned(), &key)?;
        }
    }
    Ok(tree)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Append,
}

fn split_key(raw: &str) -> Result<(String, Vec<Segment>), ApiError> {
    let invalid = || ApiError::invalid_param(raw, format!("Invalid parameter name: {raw}"));
    let (name, mut rest) = match raw.find('[') {
        Some(at) => (&raw[..at], &raw[at..]),
        None => (raw, ""),
    };
    if name.is_empty() || name.contains(']') {
        return Err(invalid());
    }
    let mut segments = Vec::new();
    while !rest.is_empty() {
        let Some(inner_and_after) = rest.strip_prefix('[') else {
            return Err(invalid());
        };
        let Some(close) = inner_and_after.find(']') else {
            return Err(invalid());
        };
        let inner = &inner_and_after[..close];
        if inner.contains('[') {
            return Err(invalid());
        }
        segments.push(if inner.is_empty() {
            Segment::Append
        } else {
            Segment::Key(inner.to_owned())
        });
        if segments.len() > MAX_DEPTH {
            return Err(ApiError::invalid_param(
                raw,
                format!("Parameter nested too deeply: at most {MAX_DEPTH} levels of brackets."),
            ));
        }
        rest = &inner_and_after[close + 1..];
    }
    Ok((name.to_owned(), segments))
}

fn conflict(raw: &str) -> ApiError {
    ApiError::invalid_param(
        raw,
        format!(
            "Invalid parameter {raw}: it was given twice, or both as a value and as an \
             object or array."
        ),
    )
}

fn insert(
    map: &mut BTreeMap<String, ParamValue>,
    key: &str,
    rest: &[Segment],
    value: String,
    raw: &str,
) -> Result<(), ApiError> {
    match rest.first() {
        None => {
            if map.contains_key(key) {
                return Err(conflict(raw));
            }
            map.insert(key.to_owned(), ParamValue::String(value));
            Ok(())
        }
        Some(Segment::Key(child)) => {
            let node = map
                .entry(key.to_owned())
                .or_insert_with(|| ParamValue::Map(BTreeMap::new()));
            match node {
                ParamValue::Map(inner) => insert(inner, child, &rest[1..], value, raw),
                _ => Err(conflict(raw)),
            }
        }
        Some(Segment::Append) => {
            let node = map
                .entry(key.to_owned())
                .or_insert_with(|| ParamValue::List(Vec::new()));
            match node {
                ParamValue::List(list) => append(list, &rest[1..], value, raw),
                _ => Err(conflict(raw)),
            }
        }
    }
}

fn append(
    list: &mut Vec<ParamValue>,
    rest: &[Segment],
    value: String,
    raw: &str,
) -> Result<(), ApiError> {
    let too_long = || {
        ApiError::invalid_param(
            raw,
            format!("Too many elements in an array: at most {MAX_LIST_LEN}."),
        )
    };
    match rest.first() {
        None => {
            if list.len() >= MAX_LIST_LEN {
                return Err(too_long());
            }
            list.push(ParamValue::String(value));
            Ok(())
        }
        Some(Segment::Key(child)) => {
            // Rack: keep filling the last map until it already has this key.
            if let Some(ParamValue::Map(last)) = list.last_mut() {
                if !has_path(last, child, &rest[1..]) {
                    return insert(last, child, &rest[1..], value, raw);
                }
            }
            if list.len() >= MAX_LIST_LEN {
                return Err(too_long());
            }
            let mut fresh = BTreeMap::new();
            insert(&mut fresh, child, &rest[1..], value, raw)?;
            list.push(ParamValue::Map(fresh));
            Ok(())
        }
        Some(Segment::Append) => Err(ApiError::invalid_param(
            raw,
            format!("Invalid parameter name: {raw} (arrays of arrays are not supported)"),
        )),
    }
}

fn has_path(map: &BTreeMap<String, ParamValue>, key: &str, rest: &[Segment]) -> bool {
    match (map.get(key), rest.first()) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(ParamValue::Map(inner)), Some(Segment::Key(child))) => {
            has_path(inner, child, &rest[1..])
        }
        // Appending inside an element that already has an array there, or a type clash:
        // either way a fresh element is the better guess.
        (Some(_), Some(_)) => true,
    }
}

/// A canonical array index: `0`, `1`, … (no sign, no leading zero).
fn list_index(key: &str) -> Option<usize> {
    if key.is_empty() || (key.len() > 1 && key.starts_with('0')) {
        return None;
    }
    if !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    key.parse().ok()
}

struct Shared {
    tree: BTreeMap<String, ParamValue>,
    /// Paths of objects and arrays a handler opened with `take_object`/`take_object_list`:
    /// their leftovers are reported one by one; an object never opened is reported whole.
    opened: BTreeSet<Vec<String>>,
}

/// The parameters of one request (or one nested object of it), read with `take_*`.
///
/// Each `take_*` removes what it reads. Nested objects from [`Params::take_object`] share
/// the request's tree, so one `reject_unknown()` on the top-level `Params`, after
/// everything known has been taken, refuses whatever is left anywhere: "Received unknown
/// parameter: shipping[foo]".
///
/// Extract it in a handler (`mut params: Params`): GET/DELETE read the query string, other
/// methods the query string and the urlencoded body.
pub struct Params {
    shared: Arc<Mutex<Shared>>,
    path: Vec<String>,
}

impl fmt::Debug for Params {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Params")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Params {
    /// Parses one or more urlencoded inputs (see [`parse`]).
    pub fn parse(inputs: &[&[u8]]) -> Result<Params, ApiError> {
        Ok(Params::from_tree(parse(inputs)?))
    }

    pub fn from_tree(tree: BTreeMap<String, ParamValue>) -> Params {
        Params {
            shared: Arc::new(Mutex::new(Shared {
                tree,
                opened: BTreeSet::new(),
            })),
            path: Vec::new(),
        }
    }

    /// The full bracketed name of `name` under this object, e.g. `items[0][price]`: the
    /// `param` of an error about it.
    pub fn param_name(&self, name: &str) -> String {
        let mut full = String::new();
        for (depth, part) in self
            .path
            .iter()
            .map(String::as_str)
            .chain([name])
            .enumerate()
        {
            if depth == 0 {
                full.push_str(part);
            } else {
                full.push('[');
                full.push_str(part);
                full.push(']');
            }
        }
        full
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A poisoned lock only means another accessor panicked; the tree is still whole.
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on this object's map (an empty one if it is gone).
    fn with_map<R>(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, ParamValue>, &mut BTreeSet<Vec<String>>) -> R,
    ) -> R {
        let mut guard = self.lock();
        let Shared { tree, opened } = &mut *guard;
        let mut map = tree;
        for part in &self.path {
            match map.get_mut(part) {
                Some(ParamValue::Map(inner)) => map = inner,
                _ => return f(&mut BTreeMap::new(), opened),
            }
        }
        f(map, opened)
    }

    fn child(&self, name: &str) -> Params {
        let mut path = self.path.clone();
        path.push(name.to_owned());
        Params {
            shared: Arc::clone(&self.shared),
            path,
        }
    }

    /// The raw value, for shapes the typed accessors do not cover.
    pub fn take_raw(&mut self, name: &str) -> Option<ParamValue> {
        self.with_map(|map, _| map.remove(name))
    }

    /// A string that may not be empty (an empty one would mean "unset": 400
    /// `parameter_invalid_empty`). `None` when absent.
    pub fn take_string(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        match self.take_raw(name) {
            None => Ok(None),
            Some(ParamValue::String(value)) if value.is_empty() => {
                Err(ApiError::empty_param(self.param_name(name)))
            }
            Some(ParamValue::String(value)) => Ok(Some(value)),
            Some(_) => Err(self.not_a_string(name)),
        }
    }

    /// A string that may be unset: `None` when absent, `Some(None)` for `name=`,
    /// `Some(Some(v))` otherwise.
    pub fn take_optional_string(&mut self, name: &str) -> Result<Option<Option<String>>, ApiError> {
        match self.take_raw(name) {
            None => Ok(None),
            Some(ParamValue::String(value)) if value.is_empty() => Ok(Some(None)),
            Some(ParamValue::String(value)) => Ok(Some(Some(value))),
            Some(_) => Err(self.not_a_string(name)),
        }
    }

    fn not_a_string(&self, name: &str) -> ApiError {
        let param = self.param_name(name);
        ApiError::invalid_param(
            param.clone(),
            format!("Invalid string: {param} must be a string, not an object or array."),
        )
    }

    /// A decimal integer (`parameter_invalid_integer` otherwise).
    pub fn take_i64(&mut self, name: &str) -> Result<Option<i64>, ApiError> {
        let param = self.param_name(name);
        match self.take_raw(name) {
            None => Ok(None),
            Some(ParamValue::String(value)) => value
                .parse::<i64>()
                .map(Some)
                .map_err(|_| ApiError::invalid_integer(param, &value)),
            Some(_) => Err(ApiError::invalid_integer(param, "an object or array")),
        }
    }

    /// `true` or `false`.
    pub fn take_bool(&mut self, name: &str) -> Result<Option<bool>, ApiError> {
        let param = self.param_name(name);
        let invalid = |shown: &str| {
            ApiError::invalid_param(
                param.clone(),
                format!("Invalid boolean: {shown}. Use true or false."),
            )
        };
        match self.take_raw(name) {
            None => Ok(None),
            Some(ParamValue::String(value)) => match value.as_str() {
                "true" => Ok(Some(true)),
                "false" => Ok(Some(false)),
                other => Err(invalid(other)),
            },
            Some(_) => Err(invalid("an object or array")),
        }
    }

    /// One of `choices` (wire value, Rust value), e.g.
    /// `take_enum("capture_method", &[("automatic", Automatic), ("manual", Manual)])`.
    pub fn take_enum<T: Clone>(
        &mut self,
        name: &str,
        choices: &[(&str, T)],
    ) -> Result<Option<T>, ApiError> {
        let Some(value) = self.take_string(name)? else {
            return Ok(None);
        };
        if let Some((_, chosen)) = choices.iter().find(|(wire, _)| *wire == value) {
            return Ok(Some(chosen.clone()));
        }
        let param = self.param_name(name);
        let wires: Vec<&str> = choices.iter().map(|(wire, _)| *wire).collect();
        let listed = match wires.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{}, or {last}", rest.join(", ")),
            None => String::new(),
        };
        Err(ApiError::invalid_param(
            param.clone(),
            format!("Invalid {param}: must be one of {listed}"),
        ))
    }

    /// The elements of an array, in index order, as (their param name, value). `name=`
    /// gives an empty array.
    fn take_elements(&mut self, name: &str) -> Result<Option<Vec<ParamValue>>, ApiError> {
        let param = self.param_name(name);
        let Some(value) = self.take_raw(name) else {
            return Ok(None);
        };
        let elements = list_elements(value, &param)?;
        Ok(Some(elements.into_iter().map(|(_, value)| value).collect()))
    }

    /// An array of strings, in either form. `name=` sets it to empty (`Some(vec![])`).
    pub fn take_list(&mut self, name: &str) -> Result<Option<Vec<String>>, ApiError> {
        let param = self.param_name(name);
        let Some(elements) = self.take_elements(name)? else {
            return Ok(None);
        };
        elements
            .into_iter()
            .enumerate()
            .map(|(index, element)| match element {
                ParamValue::String(value) => Ok(value),
                _ => Err(ApiError::invalid_param(
                    format!("{param}[{index}]"),
                    format!("Invalid string: {param}[{index}] must be a string."),
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// `expand[]` / `expand[N]`: dot paths, at most 4 levels each. Empty when absent.
    pub fn take_expand(&mut self) -> Result<Vec<String>, ApiError> {
        let param = self.param_name("expand");
        let paths = self.take_list("expand")?.unwrap_or_default();
        for path in &paths {
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(ApiError::invalid_param(
                    param,
                    format!("Invalid expand path: '{path}'"),
                ));
            }
            if path.split('.').count() > MAX_EXPAND_LEVELS {
                return Err(ApiError::invalid_param(
                    param,
                    format!(
                        "You cannot expand more than {MAX_EXPAND_LEVELS} levels of a property. \
                         Property: {path}"
                    ),
                ));
            }
        }
        Ok(paths)
    }

    /// A map of strings that follows Stripe's unset rules: `name=` clears it
    /// ([`MapUpdate::Clear`]), `name[k]=` removes `k`, `name[k]=v` sets it.
    pub fn take_map(&mut self, name: &str) -> Result<Option<MapUpdate>, ApiError> {
        let param = self.param_name(name);
        let invalid_object = || {
            ApiError::invalid_param(
                param.clone(),
                format!("Invalid object: {param} must be given as {param}[key]=value."),
            )
        };
        match self.take_raw(name) {
            None => Ok(None),
            Some(ParamValue::String(value)) if value.is_empty() => Ok(Some(MapUpdate::Clear)),
            Some(ParamValue::String(_)) | Some(ParamValue::List(_)) => Err(invalid_object()),
            Some(ParamValue::Map(entries)) => entries
                .into_iter()
                .map(|(key, value)| match value {
                    ParamValue::String(value) if value.is_empty() => Ok((key, None)),
                    ParamValue::String(value) => Ok((key, Some(value))),
                    _ => Err(ApiError::invalid_param(
                        format!("{param}[{key}]"),
                        format!("Invalid string: {param}[{key}] must be a string."),
                    )),
                })
                .collect::<Result<BTreeMap<_, _>, _>>()
                .map(|changes| Some(MapUpdate::Merge(changes))),
        }
    }

    /// [`Params::take_map`] with Stripe's metadata limits: 50 keys, keys up to 40
    /// characters, values up to 500.
    pub fn take_metadata(&mut self, name: &str) -> Result<Option<MapUpdate>, ApiError> {
        let param = self.param_name(name);
        let update = self.take_map(name)?;
        if let Some(MapUpdate::Merge(changes)) = &update {
            if changes.len() > MAX_METADATA_KEYS {
                return Err(ApiError::invalid_param(
                    param.clone(),
                    format!("Invalid {param}: at most {MAX_METADATA_KEYS} keys are allowed."),
                ));
            }
            for (key, value) in changes {
                if key.chars().count() > MAX_METADATA_KEY_CHARS {
                    return Err(ApiError::invalid_param(
                        format!("{param}[{key}]"),
                        format!(
                            "Invalid {param}: keys can be at most {MAX_METADATA_KEY_CHARS} \
                             characters long."
                        ),
                    ));
                }
                if value
                    .as_ref()
                    .is_some_and(|value| value.chars().count() > MAX_METADATA_VALUE_CHARS)
                {
                    return Err(ApiError::invalid_param(
                        format!("{param}[{key}]"),
                        format!(
                            "Invalid {param}: values can be at most {MAX_METADATA_VALUE_CHARS} \
                             characters long."
                        ),
                    ));
                }
            }
        }
        Ok(update)
    }

    /// A nested object (`shipping[name]=…`), read with the same accessors. What it leaves
    /// unread is reported by the top-level `reject_unknown`. `name=` is an error (see
    /// [`Params::take_optional_object`] for objects that may be unset).
    pub fn take_object(&mut self, name: &str) -> Result<Option<Params>, ApiError> {
        match self.take_optional_object(name)? {
            None => Ok(None),
            Some(Some(object)) => Ok(Some(object)),
            Some(None) => Err(ApiError::empty_param(self.param_name(name))),
        }
    }

    /// A nested object that may be unset: `Some(None)` for `name=`.
    pub fn take_optional_object(&mut self, name: &str) -> Result<Option<Option<Params>>, ApiError> {
        let param = self.param_name(name);
        let mut child_path = self.path.clone();
        child_path.push(name.to_owned());
        let found = self.with_map(|map, opened| match map.get(name) {
            None => Ok(None),
            Some(ParamValue::Map(_)) => {
                opened.insert(child_path);
                Ok(Some(true))
            }
            Some(ParamValue::String(value)) if value.is_empty() => {
                map.remove(name);
                Ok(Some(false))
            }
            Some(_) => Err(ApiError::invalid_param(
                param.clone(),
                format!("Invalid object: {param} must be given as {param}[field]=value."),
            )),
        })?;
        Ok(found.map(|is_object| is_object.then(|| self.child(name))))
    }

    /// An array of objects (`items[0][price]=…&items[1][price]=…`, or the `[]` form), in
    /// index order. `name=` gives an empty array.
    pub fn take_object_list(&mut self, name: &str) -> Result<Option<Vec<Params>>, ApiError> {
        let param = self.param_name(name);
        let list_path: Vec<String> = self.path.iter().cloned().chain([name.to_owned()]).collect();
        let keys = self.with_map(|map, opened| {
            let Some(value) = map.remove(name) else {
                return Ok(None);
            };
            // Re-key the elements by their index so that each element can be addressed
            // (and named in errors) as `name[i]`.
            let elements = list_elements(value, &param)?;
            let mut keyed = BTreeMap::new();
            let mut keys = Vec::with_capacity(elements.len());
            for (key, element) in elements {
                if !matches!(element, ParamValue::Map(_)) {
                    return Err(ApiError::invalid_param(
                        format!("{param}[{key}]"),
                        format!("Invalid object: {param}[{key}] must be an object."),
                    ));
                }
                let mut element_path = list_path.clone();
                element_path.push(key.clone());
                opened.insert(element_path);
                keys.push(key.clone());
                keyed.insert(key, element);
            }
            opened.insert(list_path.clone());
            map.insert(name.to_owned(), ParamValue::Map(keyed));
            Ok(Some(keys))
        })?;
        Ok(keys.map(|keys| {
            let list = self.child(name);
            keys.iter().map(|key| list.child(key)).collect()
        }))
    }

    /// Refuses what no accessor took: 400 `parameter_unknown` naming the first such
    /// parameter (in sorted order) with its full name, e.g. `shipping[foo]`. Call it last,
    /// on the top-level `Params`; on a nested object it checks that object only.
    pub fn reject_unknown(self) -> Result<(), ApiError> {
        let leftover = self.with_map(|map, opened| {
            let mut path = self.path.clone();
            first_leftover(map, &mut path, opened)
        });
        match leftover {
            None => Ok(()),
            Some(path) => {
                let mut iter = path.iter();
                let mut name = iter.next().cloned().unwrap_or_default();
                for part in iter {
                    name.push('[');
                    name.push_str(part);
                    name.push(']');
                }
                Err(ApiError::unknown_param(name))
            }
        }
    }
}

/// An array's elements with their index keys, in numeric order. Accepts the `[]` form
/// (`List`), the `[N]` form (`Map` with index keys) and `name=` (empty).
fn list_elements(value: ParamValue, param: &str) -> Result<Vec<(String, ParamValue)>, ApiError> {
    let invalid_array = || {
        ApiError::invalid_param(
            param,
            format!("Invalid array: {param} must be given as {param}[]=value or {param}[0]=value."),
        )
    };
    let elements: Vec<(String, ParamValue)> = match value {
        ParamValue::String(value) if value.is_empty() => Vec::new(),
        ParamValue::String(_) => return Err(invalid_array()),
        ParamValue::List(items) => items
            .into_iter()
            .enumerate()
            .map(|(index, item)| (index.to_string(), item))
            .collect(),
        ParamValue::Map(entries) => {
            let mut indexed = Vec::with_capacity(entries.len());
            for (key, item) in entries {
                let index = list_index(&key).ok_or_else(invalid_array)?;
                indexed.push((index, key, item));
            }
            indexed.sort_by_key(|(index, _, _)| *index);
            indexed
                .into_iter()
                .map(|(_, key, item)| (key, item))
                .collect()
        }
    };
    if elements.len() > MAX_LIST_LEN {
        return Err(ApiError::invalid_param(
            param,
            format!("Too many elements in {param}: at most {MAX_LIST_LEN}."),
        ));
    }
    Ok(elements)
}

fn first_leftover(
    map: &BTreeMap<String, ParamValue>,
    path: &mut Vec<String>,
    opened: &BTreeSet<Vec<String>>,
) -> Option<Vec<String>> {
    for (key, value) in map {
        path.push(key.clone());
        let found = match value {
            ParamValue::Map(inner) if opened.contains(path) => first_leftover(inner, path, opened),
            _ => Some(path.clone()),
        };
        if found.is_some() {
            return found;
        }
        path.pop();
    }
    None
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Params, ApiError> {
        let query = request.uri().query().unwrap_or("").to_owned();
        let reads_body = !matches!(*request.method(), Method::GET | Method::HEAD);
        if !reads_body {
            return Params::parse(&[query.as_bytes()]);
        }
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|value| value.to_str().unwrap_or("(not text)").to_owned());
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::payload_too_large(MAX_BODY_BYTES)
                } else {
                    ApiError::invalid_request(format!(
                        "The request body could not be read: {}",
                        rejection.body_text()
                    ))
                }
            })?;
        if body.len() > MAX_BODY_BYTES {
            return Err(ApiError::payload_too_large(MAX_BODY_BYTES));
        }
        if let Some(content_type) = content_type.filter(|_| !body.is_empty()) {
            let mime: String = content_type
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .chars()
                .take(100)
                .collect();
            if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
                return Err(ApiError::invalid_request(format!(
                    "Unsupported Content-Type {mime}: send parameters as \
                     application/x-www-form-urlencoded."
                )));
            }
        }
        Params::parse(&[query.as_bytes(), &body])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(input: &str) -> Params {
        Params::parse(&[input.as_bytes()]).unwrap()
    }

    fn string(value: &str) -> ParamValue {
        ParamValue::String(value.to_owned())
    }

    fn unknown_param(params: Params) -> Option<String> {
        params
            .reject_unknown()
            .err()
            .map(|error| error.object().param.clone().unwrap())
    }

    #[test]
    fn nested_maps_are_trees() {
        let tree = parse(&[b"a[b]=c&a[d][e]=f&g=h"]).unwrap();
        let expected = BTreeMap::from([
            (
                "a".to_owned(),
                ParamValue::Map(BTreeMap::from([
                    ("b".to_owned(), string("c")),
                    (
                        "d".to_owned(),
                        ParamValue::Map(BTreeMap::from([("e".to_owned(), string("f"))])),
                    ),
                ])),
            ),
            ("g".to_owned(), string("h")),
        ]);
        assert_eq!(tree, expected);
    }

    #[test]
    fn both_array_forms_read_the_same_and_indexes_may_come_out_of_order() {
        for input in [
            "expand[]=a&expand[]=b&expand[]=c",
            "expand[0]=a&expand[1]=b&expand[2]=c",
            "expand[2]=c&expand[0]=a&expand[1]=b",
            "expand%5B1%5D=b&expand%5B0%5D=a&expand%5B2%5D=c",
        ] {
            let mut params = params(input);
            assert_eq!(params.take_expand().unwrap(), ["a", "b", "c"], "{input}");
            params.reject_unknown().unwrap();
        }
    }

    #[test]
    fn indexes_sort_numerically_not_as_text() {
        let input: Vec<String> = (0..12).rev().map(|i| format!("l[{i}]={i}")).collect();
        let mut params = params(&input.join("&"));
        let expected: Vec<String> = (0..12).map(|i| i.to_string()).collect();
        assert_eq!(params.take_list("l").unwrap().unwrap(), expected);
    }

    #[test]
    fn numeric_keys_can_be_a_map_instead() {
        let mut params = params("metadata[0]=zero&metadata[10]=ten");
        assert_eq!(
            params.take_map("metadata").unwrap(),
            Some(MapUpdate::Merge(BTreeMap::from([
                ("0".to_owned(), Some("zero".to_owned())),
                ("10".to_owned(), Some("ten".to_owned())),
            ])))
        );
    }

    #[test]
    fn rack_arrays_of_maps_start_a_new_element_on_a_repeated_key() {
        let mut params = params("items[][price]=p1&items[][quantity]=2&items[][price]=p2");
        let mut items = params.take_object_list("items").unwrap().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].take_string("price").unwrap().unwrap(), "p1");
        assert_eq!(items[0].take_i64("quantity").unwrap(), Some(2));
        assert_eq!(items[1].take_string("price").unwrap().unwrap(), "p2");
        assert_eq!(items[1].take_i64("quantity").unwrap(), None);
        drop(items);
        params.reject_unknown().unwrap();
    }

    #[test]
    fn object_lists_in_index_form_name_their_elements() {
        let mut params = params("items[1][price]=p2&items[0][price]=p1&items[1][bogus]=x");
        let mut items = params.take_object_list("items").unwrap().unwrap();
        assert_eq!(items[0].take_string("price").unwrap().unwrap(), "p1");
        assert_eq!(items[1].take_string("price").unwrap().unwrap(), "p2");
        assert_eq!(items[1].param_name("price"), "items[1][price]");
        assert_eq!(unknown_param(params).as_deref(), Some("items[1][bogus]"));
    }

    #[test]
    fn empty_string_unsets() {
        let mut params = params("description=&name=n");
        assert_eq!(
            params.take_optional_string("description").unwrap(),
            Some(None)
        );
        assert_eq!(
            params.take_optional_string("name").unwrap(),
            Some(Some("n".to_owned()))
        );
        assert_eq!(params.take_optional_string("absent").unwrap(), None);
    }

    #[test]
    fn empty_string_for_a_field_that_cannot_be_unset_is_refused() {
        let mut params = params("currency=");
        let error = params.take_string("currency").unwrap_err();
        assert_eq!(
            error.object().code.as_deref(),
            Some("parameter_invalid_empty")
        );
        assert_eq!(error.object().param.as_deref(), Some("currency"));
    }

    #[test]
    fn metadata_sets_removes_and_clears() {
        let mut params = params("metadata[keep]=1&metadata[gone]=");
        let update = params.take_metadata("metadata").unwrap().unwrap();
        let mut current = BTreeMap::from([
            ("gone".to_owned(), "x".to_owned()),
            ("other".to_owned(), "y".to_owned()),
        ]);
        update.apply_to(&mut current);
        assert_eq!(
            current,
            BTreeMap::from([
                ("keep".to_owned(), "1".to_owned()),
                ("other".to_owned(), "y".to_owned()),
            ])
        );

        let mut params = self::params("metadata=");
        assert_eq!(params.take_map("metadata").unwrap(), Some(MapUpdate::Clear));
        MapUpdate::Clear.apply_to(&mut current);
        assert!(current.is_empty());
    }

    #[test]
    fn metadata_limits_are_enforced() {
        let long_key = "k".repeat(41);
        let mut params = params(&format!("metadata[{long_key}]=v"));
        let error = params.take_metadata("metadata").unwrap_err();
        assert_eq!(
            error.object().param.as_deref(),
            Some(format!("metadata[{long_key}]").as_str())
        );
        let many: Vec<String> = (0..51).map(|i| format!("metadata[k{i}]=v")).collect();
        let mut params = self::params(&many.join("&"));
        assert!(params.take_metadata("metadata").is_err());
    }

    #[test]
    fn unknown_parameters_are_named_with_brackets() {
        let mut params = params("amount=1&shipping[name]=n&shipping[foo]=x");
        params.take_i64("amount").unwrap();
        let mut shipping = params.take_object("shipping").unwrap().unwrap();
        shipping.take_string("name").unwrap();
        let error = params.reject_unknown().unwrap_err();
        assert_eq!(error.status(), axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(error.object().param.as_deref(), Some("shipping[foo]"));
        assert_eq!(error.object().code.as_deref(), Some("parameter_unknown"));
        assert_eq!(
            error.object().message,
            "Received unknown parameter: shipping[foo]"
        );
    }

    #[test]
    fn an_unknown_object_is_named_whole() {
        let mut params = params("amount=1&foo[bar]=x");
        params.take_i64("amount").unwrap();
        assert_eq!(unknown_param(params).as_deref(), Some("foo"));
    }

    #[test]
    fn everything_taken_passes() {
        let mut params = params("a=1&b[c]=2&d[]=x");
        params.take_string("a").unwrap();
        let mut b = params.take_object("b").unwrap().unwrap();
        b.take_string("c").unwrap();
        params.take_list("d").unwrap();
        params.reject_unknown().unwrap();
    }

    #[test]
    fn wrong_types_are_400_with_param() {
        let mut params =
            params("amount=ten&capture=yes&shipping=x&tags[a]=1&method=fast&address[line1][x]=y");
        let cases = [
            (params.take_i64("amount").unwrap_err(), "amount"),
            (params.take_bool("capture").unwrap_err(), "capture"),
            (params.take_object("shipping").unwrap_err(), "shipping"),
            (params.take_list("tags").unwrap_err(), "tags"),
            (
                params
                    .take_enum("method", &[("automatic", 1), ("manual", 2)])
                    .unwrap_err(),
                "method",
            ),
        ];
        for (error, param) in cases {
            assert_eq!(error.status(), axum::http::StatusCode::BAD_REQUEST);
            assert_eq!(error.object().param.as_deref(), Some(param), "{error}");
        }
        let mut address = params.take_object("address").unwrap().unwrap();
        let error = address.take_string("line1").unwrap_err();
        assert_eq!(error.object().param.as_deref(), Some("address[line1]"));
    }

    #[test]
    fn integer_error_looks_like_stripes() {
        let error = params("amount=ten").take_i64("amount").unwrap_err();
        assert_eq!(error.object().message, "Invalid integer: ten");
        assert_eq!(
            error.object().code.as_deref(),
            Some("parameter_invalid_integer")
        );
    }

    #[test]
    fn enum_error_lists_the_choices() {
        let error = params("capture_method=later")
            .take_enum(
                "capture_method",
                &[("automatic", 0), ("automatic_async", 1), ("manual", 2)],
            )
            .unwrap_err();
        assert_eq!(
            error.object().message,
            "Invalid capture_method: must be one of automatic, automatic_async, or manual"
        );
        assert_eq!(
            params("capture_method=manual")
                .take_enum("capture_method", &[("automatic", 0), ("manual", 2)])
                .unwrap(),
            Some(2)
        );
    }

    #[test]
    fn booleans_are_true_or_false() {
        let mut params = params("a=true&b=false");
        assert_eq!(params.take_bool("a").unwrap(), Some(true));
        assert_eq!(params.take_bool("b").unwrap(), Some(false));
        assert_eq!(params.take_bool("c").unwrap(), None);
    }

    #[test]
    fn percent_decoding_and_plus() {
        let mut params = params("name=Jane+Doe%20%C3%A9&metadata%5Bk%5D=a%26b%3Dc");
        assert_eq!(params.take_string("name").unwrap().unwrap(), "Jane Doe é");
        assert_eq!(
            params.take_map("metadata").unwrap(),
            Some(MapUpdate::Merge(BTreeMap::from([(
                "k".to_owned(),
                Some("a&b=c".to_owned())
            )])))
        );
    }

    #[test]
    fn malformed_and_conflicting_keys_are_400() {
        for input in [
            "a[b=1",
            "a]=1",
            "a[b]c=1",
            "[a]=1",
            "=1",
            "a[[b]]=1",
            "a=1&a=2",
            "a=1&a[b]=2",
            "a[b]=1&a=2",
            "a[]=1&a[0]=2",
            "a[][]=1",
        ] {
            let error = Params::parse(&[input.as_bytes()]).unwrap_err();
            assert_eq!(
                error.status(),
                axum::http::StatusCode::BAD_REQUEST,
                "{input}"
            );
            assert!(error.object().param.is_some(), "{input}");
        }
    }

    #[test]
    fn mixed_index_and_non_index_keys_are_not_a_list() {
        let error = params("l[0]=a&l[x]=b").take_list("l").unwrap_err();
        assert_eq!(error.object().param.as_deref(), Some("l"));
        let error = params("l[01]=a").take_list("l").unwrap_err();
        assert_eq!(error.object().param.as_deref(), Some("l"));
    }

    #[test]
    fn limits_are_enforced() {
        let too_many: Vec<String> = (0..=MAX_PARAMS).map(|i| format!("k{i}=v")).collect();
        assert!(Params::parse(&[too_many.join("&").as_bytes()]).is_err());
        let at_limit: Vec<String> = (0..MAX_PARAMS).map(|i| format!("k{i}=v")).collect();
        assert!(Params::parse(&[at_limit.join("&").as_bytes()]).is_ok());

        let deep = format!("a{}=v", "[x]".repeat(MAX_DEPTH + 1));
        assert!(Params::parse(&[deep.as_bytes()]).is_err());
        let deep_ok = format!("a{}=v", "[x]".repeat(MAX_DEPTH));
        assert!(Params::parse(&[deep_ok.as_bytes()]).is_ok());

        let long: Vec<String> = (0..=MAX_LIST_LEN).map(|i| format!("l[]={i}")).collect();
        assert!(Params::parse(&[long.join("&").as_bytes()]).is_err());
        let long_indexed: Vec<String> = (0..=MAX_LIST_LEN).map(|i| format!("l[{i}]={i}")).collect();
        let error = params(&long_indexed.join("&")).take_list("l").unwrap_err();
        assert_eq!(error.object().param.as_deref(), Some("l"));
        let ok: Vec<String> = (0..MAX_LIST_LEN).map(|i| format!("l[]={i}")).collect();
        assert_eq!(
            params(&ok.join("&")).take_list("l").unwrap().unwrap().len(),
            MAX_LIST_LEN
        );
    }

    #[test]
    fn expand_depth_is_limited() {
        assert!(params("expand[]=a.b.c.d").take_expand().is_ok());
        let error = params("expand[]=a.b.c.d.e").take_expand().unwrap_err();
        assert_eq!(error.object().param.as_deref(), Some("expand"));
        assert!(params("expand[]=a..b").take_expand().is_err());
    }

    #[test]
    fn optional_object_can_be_unset() {
        let mut params = params("shipping=");
        assert!(matches!(
            params.take_optional_object("shipping").unwrap(),
            Some(None)
        ));
        params.reject_unknown().unwrap();
    }

    #[test]
    fn debug_output_never_shows_values() {
        let tree = parse(&[b"card[number]=4242424242424242"]).unwrap();
        let printed = format!("{tree:?}");
        assert!(!printed.contains("4242"), "{printed}");
        assert!(printed.contains("number"), "{printed}");
    }
}
