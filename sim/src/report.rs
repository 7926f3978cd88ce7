//! The evaluation report: `metrics.json`, `report.html` and its plots as PNG files.
//!
//! The page is static (no script, no server): tables of every method per scenario and
//! surface, the precision-recall plot and the reliability diagram of each run, and the
//! breakdowns. Plots are drawn with plotters into PNG files beside the page, with the DejaVu
//! Sans font compiled in, so they render the same on a machine without fonts.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Once;

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::evaluate::{MethodResult, Metrics, RunResult};

const SURFACES: [&str; 3] = ["item_page", "pickup", "delivery"];
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// Makes the compiled-in font the one plotters draws "sans-serif" text with.
pub fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in and valid; a failure would only lose text on the plots.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// A plotters failure as an error.
pub(crate) fn draw_error<E: std::fmt::Debug>(error: E) -> anyhow::Error {
    anyhow::anyhow!("draw plot: {error:?}")
}

/// Draws a chart's legend in the house style.
pub(crate) fn draw_legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<
        'a,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    position: SeriesLabelPosition,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(draw_error)
}

/// Precision-recall of every answers file (a curve over its probability) and of the
/// baselines (points), one panel per surface: recall across, broken-promise rate up.
fn pr_plot(run: &RunResult, path: &Path) -> anyhow::Result<()> {
    let highest = run
        .methods
        .iter()
        .flat_map(|m| m.surfaces.values())
        .flat_map(|r| {
            r.curve
                .iter()
                .map(|p| p.broken_promise_rate)
                .chain([r.overall.broken_promise_rate])
        })
        .fold(0.0f64, f64::max);
    let top = (highest * 1.15).clamp(0.02, 1.0);
    let root = BitMapBackend::new(path, (1500, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let panels = root.split_evenly((1, 3));
    for (panel, surface) in panels.iter().zip(SURFACES) {
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{} - {surface}", run.scenario), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..1.0, 0.0..top)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("recall")
            .y_desc("broken-promise rate")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(draw_error)?;
        let mut color = 0;
        for method in run.methods.iter().filter(|m| !m.baseline) {
            let Some(result) = method.surfaces.get(surface) else {
                continue;
            };
            let style = PALETTE[color % PALETTE.len()];
            color += 1;
            let points: Vec<(f64, f64)> = result
                .curve
                .iter()
                .map(|p| (p.recall, p.broken_promise_rate))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), style.stroke_width(2)))
                .map_err(draw_error)?
                .label(method.method.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 4, style.filled())),
                )
                .map_err(draw_error)?;
        }
        for (family, prefix, marker_color) in [
            (
                "ledger + safety stock 0-5",
                "ledger+ss",
                RGBColor(90, 90, 90),
            ),
            ("no-sale rule", "no-sale<", RGBColor(200, 140, 0)),
        ] {
            let points: Vec<(f64, f64)> = run
                .methods
                .iter()
                .filter(|m| m.baseline && m.method.starts_with(prefix))
                .filter_map(|m| m.surfaces.get(surface))
                .map(|r| (r.overall.recall, r.overall.broken_promise_rate))
                .collect();
            chart
                .draw_series(LineSeries::new(
                    points.clone(),
                    marker_color.stroke_width(1),
                ))
                .map_err(draw_error)?
                .label(family)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], marker_color.stroke_width(2))
                });
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| TriangleMarker::new(p, 6, marker_color.filled())),
                )
                .map_err(draw_error)?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    }
    root.present().map_err(draw_error)?;
    Ok(())
}

/// Reliability diagram of every answers file, one panel per surface.
fn reliability_plot(run: &RunResult, path: &Path) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, (1500, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let panels = root.split_evenly((1, 3));
    for (panel, surface) in panels.iter().zip(SURFACES) {
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{} - {surface}: reliability", run.scenario),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("probability answered")
            .y_desc("share truly available")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(draw_error)?;
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                RGBColor(160, 160, 160).stroke_width(1),
            ))
            .map_err(draw_error)?
            .label("perfect calibration")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RGBColor(160, 160, 160)));
        for (index, method) in run.methods.iter().filter(|m| !m.baseline).enumerate() {
            let Some(calibration) = method
                .surfaces
                .get(surface)
                .and_then(|r| r.calibration.as_ref())
            else {
                continue;
            };
            let style = PALETTE[index % PALETTE.len()];
            let points: Vec<(f64, f64)> = calibration
                .bins
                .iter()
                .filter(|b| b.count > 0)
                .map(|b| (b.mean_probability, b.observed))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), style.stroke_width(2)))
                .map_err(draw_error)?
                .label(format!("{} (ECE {:.3})", method.method, calibration.ece))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 5, style.filled())),
                )
                .map_err(draw_error)?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    }
    root.present().map_err(draw_error)?;
    Ok(())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn percent(value: f64) -> String {
    format!("{:.2}%", 100.0 * value)
}

fn methods_table(run: &RunResult, html: &mut String) {
    html.push_str(
        "<table><tr><th>method</th>\
         <th colspan=3>item_page</th><th colspan=3>pickup</th><th colspan=3>delivery</th></tr>\
         <tr><th></th><th>broken</th><th>recall</th><th>promised</th><th>broken</th>\
         <th>recall</th><th>promised</th><th>broken</th><th>recall</th><th>promised</th></tr>",
    );
    for method in &run.methods {
        let class = if method.baseline {
            ""
        } else {
            " class=answers"
        };
        let _ = write!(html, "<tr{class}><td>{}</td>", escape(&method.method));
        for surface in SURFACES {
            match method.surfaces.get(surface) {
                Some(r) => {
                    let _ = write!(
                        html,
                        "<td>{}</td><td>{}</td><td>{}</td>",
                        percent(r.overall.broken_promise_rate),
                        percent(r.overall.recall),
                        percent(r.overall.promised_share)
                    );
                }
                None => html.push_str("<td>-</td><td>-</td><td>-</td>"),
            }
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
}

fn breakdown_table(method: &MethodResult, html: &mut String) {
    html.push_str(
        "<table><tr><th>surface</th><th>by</th><th>group</th><th>queries</th>\
         <th>broken</th><th>recall</th></tr>",
    );
    for surface in SURFACES {
        let Some(result) = method.surfaces.get(surface) else {
            continue;
        };
        for (by, groups) in [
            ("velocity", &result.by_velocity),
            ("source mix", &result.by_source_mix),
            ("location kind", &result.by_location_kind),
        ] {
            for (group, rates) in groups {
                let _ = write!(
                    html,
                    "<tr><td>{surface}</td><td>{by}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(group),
                    rates.counts.queries,
                    percent(rates.broken_promise_rate),
                    percent(rates.recall)
                );
            }
        }
    }
    html.push_str("</table>");
}

/// Writes `metrics.json`, the plots and `report.html` into `out`.
pub fn write_report(metrics: &Metrics, out: &Path) -> anyhow::Result<()> {
    register_font();
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let json = serde_json::to_vec_pretty(metrics)?;
    std::fs::write(out.join("metrics.json"), json)
        .with_context(|| format!("write {}", out.join("metrics.json").display()))?;
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=utf-8><title>stockgrid evaluation</title>\
         <style>body{font-family:sans-serif;margin:24px;max-width:1560px}\
         table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;\
         padding:3px 8px;text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}\
         tr.answers{background:#eef5ff;font-weight:bold}img{max-width:100%;border:1px solid #ddd}\
         </style></head><body><h1>stockgrid evaluation</h1>\
         <p><b>broken</b> = false positives / promised (a promise made while the truth held \
         fewer units than wanted); <b>recall</b> = true positives / truly available; \
         <b>promised</b> = promised / queries. Answers files are highlighted; the other rows \
         are the built-in baselines (the rules ledger with safety stock 0-5, and the no-sale \
         rule at four cuts).</p>",
    );
    html.push_str("<h2>Runs</h2><table><tr><th>scenario</th><th>seed</th><th>queries</th><th>folder</th></tr>");
    for run in &metrics.runs {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&run.scenario),
            run.seed,
            run.queries,
            escape(&run.dir)
        );
    }
    html.push_str("</table>");
    for (index, run) in metrics.runs.iter().enumerate() {
        let stem = format!(
            "{:02}-{}",
            index + 1,
            run.scenario.replace(['/', '\\', ' '], "_")
        );
        let pr = format!("{stem}-pr.png");
        let reliability = format!("{stem}-reliability.png");
        pr_plot(run, &out.join(&pr))?;
        reliability_plot(run, &out.join(&reliability))?;
        let _ = write!(
            html,
            "<h2>{} (seed {})</h2>",
            escape(&run.scenario),
            run.seed
        );
        methods_table(run, &mut html);
        let _ = write!(
            html,
            "<h3>Precision-recall</h3><img src=\"{pr}\" alt=\"precision-recall of {0}\">\
             <h3>Calibration</h3><img src=\"{reliability}\" alt=\"reliability of {0}\">",
            escape(&run.scenario)
        );
        html.push_str("<table><tr><th>answers</th><th>surface</th><th>ECE</th><th>Brier</th></tr>");
        for method in run.methods.iter().filter(|m| !m.baseline) {
            for surface in SURFACES {
                if let Some(c) = method
                    .surfaces
                    .get(surface)
                    .and_then(|r| r.calibration.as_ref())
                {
                    let _ = write!(
                        html,
                        "<tr><td>{}</td><td>{surface}</td><td>{:.4}</td><td>{:.4}</td></tr>",
                        escape(&method.method),
                        c.ece,
                        c.brier
                    );
                }
            }
        }
        html.push_str("</table>");
        for method in run
            .methods
            .iter()
            .filter(|m| !m.baseline || m.method == "ledger+ss0")
        {
            let _ = write!(html, "<h3>Breakdown: {}</h3>", escape(&method.method));
            breakdown_table(method, &mut html);
        }
    }
    html.push_str("</body></html>\n");
    std::fs::write(out.join("report.html"), html)
        .with_context(|| format!("write {}", out.join("report.html").display()))?;
    Ok(())
}
