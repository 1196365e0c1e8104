//! Figures on central's API, and their export as CSV and XLSX. Any operator, over what their
//! scope reaches: the cases of their grids and the centres that serve them.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use firmware_config::masterdata::Dataset;
use serde::Deserialize;
use serde_json::{json, Value};
use time::Date;

use super::session::Operator;
use super::ApiError;
use crate::cases::scope::{GridTree, Places};
use crate::figures::{CaseFigures, CaseRow, Period, UptimeRow, Window, MAX_DAYS};
use crate::Shared;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FigureQuery {
    /// `YYYY-MM-DD`, the first day (default: 29 days before `to`).
    from: Option<String>,
    /// `YYYY-MM-DD`, the last day, included (default: today in the street).
    to: Option<String>,
    #[serde(default)]
    period: Option<Period>,
    /// A grid at any level within the operator's scope: its cases and those below it.
    grid: Option<String>,
    /// The export's table (CSV): `category`, `grid`, `period` or `uptime`.
    table: Option<String>,
}

/// The export's tables by their keys, as `tables` makes them.
const TABLES: [&str; 4] = ["category", "grid", "period", "uptime"];

/// What one request figures.
pub struct Figured {
    pub window: Window,
    pub periods: Vec<String>,
    pub cases: CaseFigures,
    pub uptime: Vec<UptimeRow>,
}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, m)
}

fn day(field: &str, s: &str) -> Result<Date, ApiError> {
    firmware_config::masterdata::calendar_date(s)
        .ok_or_else(|| bad(format!("{field}: {s:?} is not a date; write YYYY-MM-DD")))
}

/// Checks the query and figures it (blocking: it reads the window's cases).
fn figure(
    shared: &Shared,
    who: &crate::operators::Signed,
    q: &FigureQuery,
) -> Result<Figured, ApiError> {
    if let Some(t) = q.table.as_deref().filter(|t| !TABLES.contains(t)) {
        return Err(bad(format!("table: {t:?}; use {}", TABLES.join(", "))));
    }
    let offset =
        firmware_config::config::gateway::parse_utc_offset(&shared.config.alerts.utc_offset)
            .unwrap_or(time::UtcOffset::UTC);
    let now = shared.clock.now_utc();
    let today = now.to_offset(offset).date();
    let to =
        q.to.as_deref()
            .map(|s| day("to", s))
            .transpose()?
            .unwrap_or(today);
    let from = match q.from.as_deref() {
        Some(s) => day("from", s)?,
        None => to - time::Duration::days(29),
    };
    if from > to {
        return Err(bad("from: after to"));
    }
    if (to - from).whole_days() >= MAX_DAYS {
        return Err(bad(format!("from, to: at most {MAX_DAYS} days")));
    }
    let window = Window {
        from,
        to,
        period: q.period.unwrap_or(Period::Day),
        offset,
    };
    let current = shared.masterdata.current();
    let empty = Dataset::default();
    let d = current.as_ref().map_or(&empty, |v| &v.dataset);
    let tree = GridTree::new(d);
    let scope = who.scope.as_deref();
    if let Some(g) = &q.grid {
        // A grid outside the scope is as unknown as one the data lacks.
        if tree.name(g).is_none() || !scope.is_none_or(|s| tree.ancestry(g).any(|a| a == s)) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no grid {g:?} within your scope"),
            ));
        }
    }
    let cases = shared
        .cases
        .registered_or_finished_in(window.start(), window.end(), |station| {
            tree.reaches(scope, station)
                && q.grid
                    .as_deref()
                    .is_none_or(|g| station.is_some_and(|st| tree.ancestry(st).any(|a| a == g)))
        });
    let figures = crate::figures::cases(&cases, &window, now, shared.cases.fallback(), |g| {
        tree.name(g).map(str::to_owned)
    });
    let health = super::health::view(shared);
    let gateways: Vec<String> = super::map::serving(d, scope, &health.centres)
        .into_iter()
        .map(|c| c.gateway.clone())
        .collect();
    let devices: BTreeMap<String, u32> = health
        .centres
        .iter()
        .map(|c| {
            (
                c.gateway.clone(),
                (c.cameras.len() + c.terminals.len()) as u32,
            )
        })
        .collect();
    let alerts = shared
        .alerts
        .matching(|a| gateways.contains(&a.gateway) && crate::figures::is_outage_in(a, &window));
    let uptime = crate::figures::uptime(&alerts, &devices, &gateways, &window, now);
    Ok(Figured {
        periods: window.buckets().into_iter().map(|b| b.label).collect(),
        window,
        cases: figures,
        uptime,
    })
}

type Asked = Result<Query<FigureQuery>, axum::extract::rejection::QueryRejection>;

/// The query checked and figured, off the async workers (it reads the window's cases).
async fn figured(
    shared: Arc<Shared>,
    who: crate::operators::Signed,
    q: Asked,
) -> Result<(Figured, FigureQuery), ApiError> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    tokio::task::spawn_blocking(move || figure(&shared, &who, &q).map(|f| (f, q)))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

/// `GET /api/v1/figures?from=&to=&period=day|week|month&grid=`.
pub async fn json_figures(
    State(shared): State<Arc<Shared>>,
    Operator(who): Operator,
    q: Asked,
) -> Response {
    match figured(shared, who, q).await {
        Ok((f, _)) => Json(json!({
            "from": f.window.from.to_string(),
            "to": f.window.to.to_string(),
            "period": f.window.period,
            "periods": f.periods,
            "cases": f.cases,
            "uptime": f.uptime,
        }))
        .into_response(),
        Err(r) => r.into_response(),
    }
}

/// One table of the export: its key (CSV), its title (the sheet's name), the header, and the
/// rows as text or numbers.
type Table = (&'static str, &'static str, Vec<String>, Vec<Vec<Value>>);

fn tables(f: &Figured) -> Vec<Table> {
    let head = |first: &str| {
        [
            first,
            "登记 registered",
            "办结 finished",
            "在办 open",
            "超期 late",
            "平均用时(小时) mean hours",
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let rows = |rows: &[CaseRow], named: bool| -> Vec<Vec<Value>> {
        rows.iter()
            .map(|r| {
                let mut v = vec![json!(r.key)];
                if named {
                    v.push(json!(r.name.clone().unwrap_or_default()));
                }
                v.extend([
                    json!(r.registered),
                    json!(r.finished),
                    json!(r.open),
                    json!(r.late),
                    json!(r.mean_hours),
                ]);
                v
            })
            .collect()
    };
    let mut grid_head = head("网格 grid");
    grid_head.insert(1, "名称 name".into());
    let mut uptime_head = vec!["网关 gateway".to_owned(), "项目 measure".to_owned()];
    uptime_head.extend(f.periods.iter().cloned());
    let uptime_rows = f
        .uptime
        .iter()
        .flat_map(|u| {
            let line = |what: &str, pcts: &[f64]| {
                let mut v = vec![json!(u.gateway), json!(what)];
                v.extend(pcts.iter().map(|p| json!(p)));
                v
            };
            [
                line("在线率 uptime %", &u.uptime_pct),
                line("设备在线率 devices up %", &u.device_uptime_pct),
            ]
        })
        .collect();
    vec![
        (
            "category",
            "按类别 By category",
            head("类别 category"),
            rows(&f.cases.by_category, false),
        ),
        (
            "grid",
            "按网格 By grid",
            grid_head,
            rows(&f.cases.by_grid, true),
        ),
        (
            "period",
            "按时段 By period",
            head("时段 period"),
            rows(&f.cases.by_period, false),
        ),
        ("uptime", "在线率 Uptime", uptime_head, uptime_rows),
    ]
}

fn csv_cell(v: &Value) -> String {
    let s = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    // Quoted when it must be; a leading formula character is defused (CSV injection).
    let s = if s.starts_with(['=', '+', '-', '@']) && s.parse::<f64>().is_err() {
        format!("'{s}")
    } else {
        s
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn attachment(kind: &'static str, name: String, body: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /api/v1/figures.csv?…&table=category|grid|period|uptime`: one table, UTF-8 with a byte
/// order mark (so that spreadsheet programs read its Chinese).
pub async fn csv(State(shared): State<Arc<Shared>>, Operator(who): Operator, q: Asked) -> Response {
    let (f, q) = match figured(shared, who, q).await {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let want = q.table.unwrap_or_else(|| "category".into());
    let Some((key, _, head, rows)) = tables(&f).into_iter().find(|t| t.0 == want) else {
        return bad(format!("table: {want:?}; use {}", TABLES.join(", "))).into_response();
    };
    let mut out = String::from("\u{feff}");
    out += &head
        .iter()
        .map(|h| csv_cell(&json!(h)))
        .collect::<Vec<_>>()
        .join(",");
    out += "\r\n";
    for r in rows {
        out += &r.iter().map(csv_cell).collect::<Vec<_>>().join(",");
        out += "\r\n";
    }
    attachment(
        "text/csv; charset=utf-8",
        format!("figures-{key}-{}-{}.csv", f.window.from, f.window.to),
        out.into_bytes(),
    )
}

/// `GET /api/v1/figures.xlsx?…`: every table, a sheet each.
pub async fn xlsx(
    State(shared): State<Arc<Shared>>,
    Operator(who): Operator,
    q: Asked,
) -> Response {
    let (f, _) = match figured(shared, who, q).await {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    match workbook(&f) {
        Ok(bytes) => attachment(
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            format!("figures-{}-{}.xlsx", f.window.from, f.window.to),
            bytes,
        ),
        Err(e) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("xlsx: {e}")).into_response()
        }
    }
}

fn workbook(f: &Figured) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    use rust_xlsxwriter::{Format, Workbook};
    let mut book = Workbook::new();
    let bold = Format::new().set_bold();
    for (_, title, head, rows) in tables(f) {
        let sheet = book.add_worksheet();
        sheet.set_name(title)?;
        for (c, h) in head.iter().enumerate() {
            sheet.write_string_with_format(0, c as u16, h, &bold)?;
        }
        for (r, row) in rows.iter().enumerate() {
            let r = r as u32 + 1;
            for (c, v) in row.iter().enumerate() {
                let c = c as u16;
                match v {
                    Value::Number(n) => {
                        sheet.write_number(r, c, n.as_f64().unwrap_or_default())?;
                    }
                    Value::String(s) => {
                        sheet.write_string(r, c, s)?;
                    }
                    _ => {}
                }
            }
        }
        sheet.autofit();
    }
    book.save_to_buffer()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_formulas_defused() {
        assert_eq!(csv_cell(&json!("红星, 东风巷")), "\"红星, 东风巷\"");
        assert_eq!(csv_cell(&json!("say \"hi\"")), "\"say \"\"hi\"\"\"");
        assert_eq!(
            csv_cell(&json!("=HYPERLINK(\"x\")")),
            "\"'=HYPERLINK(\"\"x\"\")\""
        );
        assert_eq!(csv_cell(&json!("-3")), "-3", "a number stays one");
        assert_eq!(csv_cell(&json!(12.5)), "12.5");
        assert_eq!(csv_cell(&Value::Null), "");
    }

    #[test]
    fn the_tables_checked_are_the_tables_made() {
        let window = Window {
            from: time::macros::date!(2026 - 12 - 01),
            to: time::macros::date!(2026 - 12 - 01),
            period: Period::Day,
            offset: time::UtcOffset::UTC,
        };
        let cases = crate::figures::cases(
            &[],
            &window,
            time::OffsetDateTime::UNIX_EPOCH,
            std::time::Duration::from_secs(1),
            |_| None,
        );
        let f = Figured {
            window,
            periods: Vec::new(),
            cases,
            uptime: Vec::new(),
        };
        let made: Vec<&str> = tables(&f).iter().map(|t| t.0).collect();
        assert_eq!(made, TABLES);
    }
}
