//! Stripe list endpoints: the `limit` / `starting_after` / `ending_before` parameters and
//! the list object `{"object":"list","url":"/v1/customers","has_more":…,"data":[…]}`.
//!
//! # The keyset contract
//!
//! Lists are newest first, ordered by `(created, id)` descending: `id` breaks ties between
//! objects created in the same second, so the order is total and a cursor is exact. The
//! resource code looks the cursor object up (404 `resource_missing` with
//! `param=starting_after`/`ending_before` if it does not exist in this project and mode),
//! then fetches **`params.fetch_limit()` rows (`limit + 1`)** in
//! [`ListParams::direction`]:
//!
//! | request | SQL (`c` = the cursor object's `(created, id)`) |
//! |---|---|
//! | no cursor | `ORDER BY created DESC, id DESC LIMIT $fetch_limit` |
//! | `starting_after` | `WHERE (created, id) < c ORDER BY created DESC, id DESC LIMIT $fetch_limit` |
//! | `ending_before` | `WHERE (created, id) > c ORDER BY created ASC, id ASC LIMIT $fetch_limit` |
//!
//! and hands the rows, in that fetched order, to [`List::from_page`], which keeps `limit`
//! of them, sets `has_more` from the extra row, and puts an `ending_before` page back in
//! newest-first order.

use serde::Serialize;

use super::error::ApiError;
use super::form::Params;

pub const DEFAULT_LIMIT: usize = 10;
pub const MAX_LIMIT: usize = 100;

/// Where a page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// Objects older than this id (the next page).
    StartingAfter(String),
    /// Objects newer than this id (the previous page).
    EndingBefore(String),
}

/// The order to fetch rows in (see the module's keyset contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `ORDER BY created DESC, id DESC`
    NewestFirst,
    /// `ORDER BY created ASC, id ASC` (for `ending_before`)
    OldestFirst,
}

/// A list request's paging parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListParams {
    /// 1 to [`MAX_LIMIT`].
    pub limit: usize,
    pub cursor: Option<Cursor>,
}

impl ListParams {
    /// Takes `limit`, `starting_after` and `ending_before` from `params` (the handler then
    /// takes its filters and calls `reject_unknown`). An empty cursor is no cursor.
    pub fn take_from(params: &mut Params) -> Result<ListParams, ApiError> {
        let limit = match params.take_i64("limit")? {
            None => DEFAULT_LIMIT,
            Some(limit) if limit < 1 => {
                return Err(ApiError::invalid_param(
                    params.param_name("limit"),
                    "Invalid limit: This value must be greater than or equal to 1.",
                ))
            }
            Some(limit) if limit > MAX_LIMIT as i64 => {
                return Err(ApiError::invalid_param(
                    params.param_name("limit"),
                    format!("Invalid limit: This value must be less than or equal to {MAX_LIMIT}."),
                ))
            }
            Some(limit) => limit as usize,
        };
        let starting_after = params.take_optional_string("starting_after")?.flatten();
        let ending_before = params.take_optional_string("ending_before")?.flatten();
        let cursor = match (starting_after, ending_before) {
            (Some(_), Some(_)) => {
                return Err(ApiError::exclusive_params(
                    "ending_before",
                    "starting_after",
                ))
            }
            (Some(id), None) => Some(Cursor::StartingAfter(id)),
            (None, Some(id)) => Some(Cursor::EndingBefore(id)),
            (None, None) => None,
        };
        Ok(ListParams { limit, cursor })
    }

    /// Rows to fetch: one more than `limit`, to learn `has_more`.
    pub fn fetch_limit(&self) -> i64 {
        self.limit as i64 + 1
    }

    pub fn direction(&self) -> Direction {
        match self.cursor {
            Some(Cursor::EndingBefore(_)) => Direction::OldestFirst,
            _ => Direction::NewestFirst,
        }
    }
}

/// A Stripe list object. Serialises as `{"object":"list","url",…,"has_more",…,"data":[…]}`;
/// return it from a handler as `Json(list)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct List<T> {
    object: &'static str,
    /// The list's own path (`/v1/customers`): the SDKs page by re-requesting it.
    pub url: String,
    pub has_more: bool,
    pub data: Vec<T>,
}

impl<T> List<T> {
    /// Builds the page from rows fetched as the keyset contract says: at most
    /// `params.fetch_limit()` of them, in `params.direction()` order.
    pub fn from_page(url: impl Into<String>, params: &ListParams, mut rows: Vec<T>) -> List<T> {
        debug_assert!(
            rows.len() as i64 <= params.fetch_limit(),
            "fetched {} rows for a limit of {}",
            rows.len(),
            params.limit
        );
        let has_more = rows.len() > params.limit;
        rows.truncate(params.limit);
        if params.direction() == Direction::OldestFirst {
            rows.reverse();
        }
        List {
            object: "list",
            url: url.into(),
            has_more,
            data: rows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list_params(query: &str) -> Result<ListParams, ApiError> {
        let mut params = Params::parse(&[query.as_bytes()]).unwrap();
        let list = ListParams::take_from(&mut params)?;
        params.reject_unknown()?;
        Ok(list)
    }

    #[test]
    fn limit_defaults_to_10_and_accepts_1_to_100() {
        assert_eq!(list_params("").unwrap().limit, 10);
        assert_eq!(list_params("limit=1").unwrap().limit, 1);
        assert_eq!(list_params("limit=100").unwrap().limit, 100);
        for bad in ["limit=0", "limit=101", "limit=-1", "limit=ten", "limit="] {
            let error = list_params(bad).unwrap_err();
            assert_eq!(error.status().as_u16(), 400, "{bad}");
            assert_eq!(error.object().param.as_deref(), Some("limit"), "{bad}");
        }
    }

    #[test]
    fn cursors_are_mutually_exclusive() {
        assert_eq!(
            list_params("starting_after=cus_2").unwrap().cursor,
            Some(Cursor::StartingAfter("cus_2".to_owned()))
        );
        assert_eq!(
            list_params("ending_before=cus_2").unwrap().cursor,
            Some(Cursor::EndingBefore("cus_2".to_owned()))
        );
        assert_eq!(list_params("starting_after=").unwrap().cursor, None);
        let error = list_params("starting_after=cus_1&ending_before=cus_2").unwrap_err();
        assert_eq!(error.object().code.as_deref(), Some("parameters_exclusive"));
    }

    #[test]
    fn a_full_page_has_more_and_drops_the_extra_row() {
        let params = list_params("limit=2").unwrap();
        assert_eq!(params.fetch_limit(), 3);
        let list = List::from_page("/v1/customers", &params, vec!["c3", "c2", "c1"]);
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            json!({"object": "list", "url": "/v1/customers", "has_more": true, "data": ["c3", "c2"]})
        );
        let last = List::from_page("/v1/customers", &params, vec!["c1"]);
        assert!(!last.has_more);
        assert_eq!(last.data, ["c1"]);
    }

    #[test]
    fn an_ending_before_page_is_fetched_oldest_first_and_returned_newest_first() {
        let params = list_params("limit=2&ending_before=c1").unwrap();
        assert_eq!(params.direction(), Direction::OldestFirst);
        let list = List::from_page("/v1/customers", &params, vec!["c2", "c3", "c4"]);
        assert!(list.has_more);
        assert_eq!(list.data, ["c3", "c2"]);
    }
}
