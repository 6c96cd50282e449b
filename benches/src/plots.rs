//! The latency percentile curves of each echo load, switchboard beside
//! tokio, as SVG files BENCHMARKS.md embeds (`benches/plots/*.svg` beside
//! the report).

use std::path::Path;

use plotters::prelude::*;

use crate::{Kind, Results};

/// switchboard's curve colour, and tokio's.
const COLOURS: [RGBColor; 2] = [RGBColor(0x22, 0x77, 0xcc), RGBColor(0xee, 0x77, 0x33)];

/// The folder of the plots, relative to the report.
pub(crate) const DIR: &str = "benches/plots";

/// A file name for a load: `echo 64 B, 1,000 connections` ->
/// `echo-64-b-1000-connections.svg`.
fn slug(name: &str) -> String {
    let mut out = String::new();
    for ch in name.chars() {
        if ch.is_ascii_alphanumeric() {
            out.push(ch.to_ascii_lowercase());
        } else if ch != ',' && !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    format!("{}.svg", out.trim_end_matches('-'))
}

/// Draws one load's curves: x the percentile on a `1/(1-p)` log scale, y
/// the latency in µs, one line per server.
fn draw(name: &str, curves: &[Vec<(f64, f64)>; 2]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let x = |p: f64| 1.0 / (1.0 - (p / 100.0).min(0.99999));
        let x_max = curves.iter().flatten().map(|&(p, _)| x(p)).fold(10.0f64, f64::max);
        let y_max = curves.iter().flatten().map(|&(_, us)| us).fold(1.0f64, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{name}: latency by percentile"), ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d((1.0f64..x_max).log_scale(), 0.0..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (µs)")
            .x_label_formatter(&|v| format!("{}", 100.0 * (1.0 - 1.0 / v)))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(|e| e.to_string())?;
        for kind in [Kind::Switchboard, Kind::Tokio] {
            let colour = COLOURS[kind.index()];
            let points: Vec<(f64, f64)> = curves[kind.index()].iter().map(|&(p, us)| (x(p), us)).collect();
            if points.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(kind.name())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Writes a plot for every echo load with a curve, under `DIR` beside
/// `report`; returns each load's name and its plot's path relative to the
/// report.
pub(crate) fn write(r: &Results, report: &Path) -> Result<Vec<(String, String)>, String> {
    let dir = report.parent().unwrap_or(Path::new(".")).join(DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for ((load, _), curves) in r.echo.iter().zip(&r.curves) {
        if curves.iter().all(Vec::is_empty) {
            continue;
        }
        let file = slug(&load.name);
        let path = dir.join(&file);
        let svg = draw(&load.name, curves)?;
        std::fs::write(&path, svg).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push((load.name.clone(), format!("{DIR}/{file}")));
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_file_names() {
        assert_eq!(slug("echo 64 B, 1,000 connections"), "echo-64-b-1000-connections.svg");
        assert_eq!(
            slug("pinned: echo 64 B, 64 connections, depth 16"),
            "pinned-echo-64-b-64-connections-depth-16.svg"
        );
    }

    #[test]
    fn draws_both_curves() {
        let curves = [vec![(50.0, 100.0), (99.0, 300.0)], vec![(50.0, 120.0), (99.0, 500.0)]];
        let svg = draw("echo", &curves).unwrap();
        assert!(svg.contains("stroke=\"#2277CC\"") && svg.contains("stroke=\"#EE7733\""));
        assert!(svg.contains("\nswitchboard\n</text>") && svg.contains("\ntokio\n</text>"), "legend");
    }
}
