//! The ADSketch pattern catalog: see and label the patterns the agent learnt.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/patterns` | HTML page: every series' patterns as SVG sparklines (same filters) |
//! | GET | `/api/v1/patterns?group=&entity=&metric=&limit=` | JSON: series and their patterns; `group` and `metric` exact, `entity` a substring of the entity key |
//! | GET | `/api/v1/patterns/{series}` | JSON: one series |
//! | PUT | `/api/v1/patterns/{series}/{id}/labels` | replaces the labels with the body's `{"labels": [...]}` |
//! | DELETE | `/api/v1/patterns/{series}/{id}/labels` | removes every label |
//! | PUT | `/api/v1/patterns/{series}/{id}/labels/{label}` | adds one label |
//! | DELETE | `/api/v1/patterns/{series}/{id}/labels/{label}` | removes one label (404 if absent) |
//!
//! `{series}` is the stable id the listing gives each series; `{label}` is
//! percent-decoded (`team%2Fdb` is `team/db`). Labels are 1 to 64 bytes of
//! `[A-Za-z0-9_.:/-]`, at most 16 per pattern, no repeats. A bad request gets a 4xx
//! with the reason and changes nothing; a 200 means the edit is in the state file.
//!
//! What lives where: [`board`] holds the published copy ([`PatternCatalog`]), [`edit`]
//! the edit messages, `api` the JSON handlers, `page` the HTML. The detector owns the
//! patterns and labels; this module only shows them and forwards edits.

mod api;
pub(crate) mod board;
pub(crate) mod edit;
mod page;
pub use page::esc as html_escape;
#[cfg(test)]
mod tests;

use hyper::{Method, Response, StatusCode};

pub use board::{series_id, Filter, PatternCatalog, SeriesPatterns, REFRESH};
pub use edit::{CatalogHandle, EditError, EditOutcome, LabelEdit, LabelEditRequest};

use super::server::{Admin, ApiRequest, Body};

/// Decodes `%XX` escapes of one path segment; `None` when an escape is malformed or the
/// result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut k = 0;
    while k < bytes.len() {
        if bytes[k] == b'%' {
            let hex = s.get(k + 1..k + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            k += 3;
        } else {
            out.push(bytes[k]);
            k += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Answers the catalog's routes.
pub async fn handle(req: &ApiRequest, admin: &Admin) -> Response<Body> {
    let Some(catalog) = &admin.catalog else {
        return api::error(
            StatusCode::NOT_FOUND,
            "not_found",
            "the pattern catalog is not available (no group runs the adsketch detector)",
        );
    };
    let query = req.query.as_deref();
    if req.path == "/patterns" {
        return match req.method {
            Method::GET => page::render(catalog, query),
            _ => api::error(StatusCode::METHOD_NOT_ALLOWED, "bad_data", "GET only"),
        };
    }
    let rest = req.path.trim_start_matches("/api/v1/patterns");
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    match (&req.method, parts.as_slice()) {
        (&Method::GET, []) => api::list(catalog, query),
        (&Method::GET, [series]) => api::one(catalog, series),
        (m, [series, id, "labels"]) => api::edit(catalog, m, series, id, None, &req.body).await,
        (m, [series, id, "labels", label]) => match percent_decode(label) {
            Some(label) => api::edit(catalog, m, series, id, Some(label), &req.body).await,
            None => api::error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                "the label in the path is not valid percent-encoded UTF-8",
            ),
        },
        (_, [] | [_]) => api::error(StatusCode::METHOD_NOT_ALLOWED, "bad_data", "GET only"),
        _ => api::error(
            StatusCode::NOT_FOUND,
            "not_found",
            "unknown catalog path (expected /api/v1/patterns[/{series}[/{id}/labels[/{label}]]])",
        ),
    }
}
