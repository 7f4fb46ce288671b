//! Cursor paging shared by every list endpoint: newest first, `limit`
//! (default 20, max 100) and `starting_after=<id>`.

use serde::Serialize;

pub const PAGE_LIMIT_DEFAULT: usize = 20;
pub const PAGE_LIMIT_MAX: usize = 100;

/// A parsed page request. `starting_after` is the integer behind a typed id:
/// rows with a smaller id come next.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: usize,
    pub starting_after: Option<i64>,
}

impl Default for Page {
    fn default() -> Self {
        Page { limit: PAGE_LIMIT_DEFAULT, starting_after: None }
    }
}

impl Page {
    /// The cursor as a bound for `WHERE id < ?`.
    pub fn before_id(&self) -> i64 {
        self.starting_after.unwrap_or(i64::MAX)
    }

    /// How many rows to fetch: one more than the page, to learn `has_more`.
    pub fn fetch(&self) -> i64 {
        (self.limit + 1) as i64
    }
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct List<T> {
    pub object: &'static str,
    pub data: Vec<T>,
    pub has_more: bool,
}

impl<T> List<T> {
    /// Trims the extra row fetched by [`Page::fetch`] into `has_more`.
    pub fn from_rows(mut rows: Vec<T>, page: &Page) -> List<T> {
        let has_more = rows.len() > page.limit;
        rows.truncate(page.limit);
        List { object: "list", data: rows, has_more }
    }
}
