//! `GET /patterns`: the catalog as one server-rendered HTML page, no JavaScript.
//!
//! Each series gets a section; each pattern a card with its mean vector drawn as an
//! inline SVG sparkline (`<svg class="spark">` holding one `<polyline>` of `m` points),
//! its id, kind, size, radius, issue labels and last match. The sparklines of a series
//! share one vertical scale, so their shapes and levels compare at a glance.

use std::fmt::Write;

use hyper::{Response, StatusCode};

use super::api::parse_query;
use super::board::SeriesPatterns;
use super::edit::CatalogHandle;
use crate::detect::adsketch::{Kind, Pattern};
use crate::export::http::{html, Body};

/// Most series one page shows (every pattern is an SVG; filters narrow the rest).
const MAX_SERIES: usize = 100;

/// Sparkline size, CSS pixels.
const WIDTH: f64 = 160.0;
const HEIGHT: f64 = 48.0;
const PAD: f64 = 3.0;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}\
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.4em 0 .1em}\
.entity{color:#555;margin:0 0 .6em;font-family:monospace}\
.grid{display:flex;flex-wrap:wrap;gap:10px}\
figure{margin:0;padding:8px;border:1px solid #ccc;border-radius:6px;width:170px;background:#fafafa}\
figure.abnormal{border-color:#d33;background:#fff5f5}\
svg.spark{display:block;background:#fff;border:1px solid #eee}\
svg.spark polyline{fill:none;stroke-width:2}\
figure.normal polyline{stroke:#2a7ab8}figure.abnormal polyline{stroke:#d33}\
figcaption{font-size:12px;margin-top:4px}\
.kind{font-weight:bold;text-transform:uppercase;font-size:11px}\
.normal .kind{color:#2a7ab8}.abnormal .kind{color:#d33}\
.label{display:inline-block;background:#ffe9a8;border-radius:3px;padding:0 4px;margin:1px 2px 1px 0;font-family:monospace}\
.muted{color:#888}form{margin:.6em 0}input{margin-right:.5em}";

/// Escapes text for HTML element content and attribute values (the one escaper of
/// every page kpiwatch writes).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS UTC`, or "never".
fn when(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
        .map_or_else(
            || "never".to_string(),
            |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

/// The `points` attribute of a sparkline of `mean` on the vertical range `lo..hi`.
pub(super) fn points(mean: &[f64], lo: f64, hi: f64) -> String {
    let span = if hi - lo > f64::EPSILON { hi - lo } else { 1.0 };
    let dx = (WIDTH - 2.0 * PAD) / (mean.len().max(2) - 1) as f64;
    let mut out = String::new();
    for (k, &v) in mean.iter().enumerate() {
        let x = PAD + k as f64 * dx;
        let y = HEIGHT - PAD - (v - lo) / span * (HEIGHT - 2.0 * PAD);
        if k > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{x:.1},{y:.1}");
    }
    out
}

fn card(out: &mut String, p: &Pattern, lo: f64, hi: f64) {
    let kind = p.kind.as_str();
    let _ = write!(
        out,
        "<figure class=\"pattern {kind}\" id=\"pattern-{id}\" data-id=\"{id}\">\
         <svg class=\"spark\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         role=\"img\" aria-label=\"mean of pattern {id}\"><polyline points=\"{pts}\"/></svg>\
         <figcaption><b>#{id}</b> <span class=\"kind\">{kind}</span><br>\
         size {size} · radius {radius:.3}<br>",
        id = p.id,
        pts = points(&p.mean, lo, hi),
        size = p.size,
        radius = p.radius,
    );
    if p.labels.is_empty() {
        out.push_str("<span class=\"muted\">no labels</span>");
    } else {
        for l in &p.labels {
            let _ = write!(out, "<span class=\"label\">{}</span>", esc(l));
        }
    }
    let _ = write!(
        out,
        "<br><span class=\"muted\">last match {}</span></figcaption></figure>",
        when(p.last_match_ms)
    );
}

fn section(out: &mut String, s: &SeriesPatterns) {
    // One vertical scale per series: T_n spans [0, 1] after scaling; abnormal means may
    // leave it.
    let (lo, hi) = s
        .patterns
        .iter()
        .flat_map(|p| p.mean.iter().copied())
        .filter(|v| v.is_finite())
        .fold((0.0f64, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (normal, abnormal) = s.counts();
    let _ = write!(
        out,
        "<section class=\"series\" id=\"series-{id}\"><h2>{group} / {metric}</h2>\
         <p class=\"entity\">{entity} · {normal} normal, {abnormal} abnormal · m = {m} · \
         <a href=\"/api/v1/patterns/{id}\">JSON</a></p><div class=\"grid\">",
        id = s.id,
        group = esc(&s.group),
        metric = esc(&s.metric),
        entity = esc(&s.entity),
        m = s.m,
    );
    // Abnormal patterns first: they are what people come to label.
    for kind in [Kind::Abnormal, Kind::Normal] {
        for p in s.patterns.iter().filter(|p| p.kind == kind) {
            card(out, p, lo, hi);
        }
    }
    out.push_str("</div></section>");
}

/// `GET /patterns`.
pub(super) fn render(handle: &CatalogHandle, query: Option<&str>) -> Response<Body> {
    let (filter, _) = match parse_query(query) {
        Ok(q) => q,
        Err(e) => return html(StatusCode::BAD_REQUEST, format!("<p>{}</p>", esc(&e))),
    };
    let (series, total) = handle.patterns.list(&filter, MAX_SERIES);
    let mut out = String::with_capacity(4096 + series.len() * 4096);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>kpiwatch · ADSketch patterns</title><style>{STYLE}</style></head><body>\
         <h1>ADSketch patterns</h1>\
         <p>Every learnt pattern of every series: the mean subsequence (scaled so that the \
         series' normal history spans the box), its kind, size (member subsequences), \
         radius, issue labels and last match. Label patterns with \
         <code>PUT /api/v1/patterns/&lt;series&gt;/&lt;id&gt;/labels/&lt;label&gt;</code>.</p>\
         <form method=\"get\" action=\"/patterns\">\
         <input name=\"group\" placeholder=\"group\" value=\"{g}\">\
         <input name=\"entity\" placeholder=\"entity contains\" value=\"{e}\">\
         <input name=\"metric\" placeholder=\"metric\" value=\"{m}\">\
         <button>Filter</button></form>",
        g = esc(filter.group.as_deref().unwrap_or("")),
        e = esc(filter.entity.as_deref().unwrap_or("")),
        m = esc(filter.metric.as_deref().unwrap_or("")),
    );
    if series.is_empty() {
        out.push_str(
            "<p class=\"muted\">No patterns yet: series learn once they have T_n + T_a \
             points (see detectors.adsketch in the config).</p>",
        );
    }
    if total > series.len() {
        let _ = write!(
            out,
            "<p class=\"muted\">Showing {} of {total} series; filter to see the others.</p>",
            series.len()
        );
    }
    for s in &series {
        section(&mut out, s);
    }
    out.push_str("</body></html>");
    html(StatusCode::OK, out)
}
