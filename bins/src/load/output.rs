//! The files a run can leave: the latency histogram in HdrHistogram's
//! percentile distribution format (`--hdr-out`, the `.hgrm` text that
//! HdrHistogram's plotter reads) and an SVG plot (`--plot`) of the latency
//! percentile curve and the throughput over time.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use super::Report;

/// The percentiles the latency curve is drawn through (and `--json` lists
/// as `percentiles_us`): 0 to 99.999; 100 (the max) has no place on the
/// curve's `1/(1-p)` axis.
pub const PERCENTILES: [f64; 12] =
    [0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999];

/// The colour of the latency curve in the SVG (`#2277CC`).
const CURVE: RGBColor = RGBColor(0x22, 0x77, 0xcc);
/// The colour of the throughput line in the SVG (`#EE7733`).
const THROUGHPUT: RGBColor = RGBColor(0xee, 0x77, 0x33);

/// `(percentile, latency in ns)` at each of [`PERCENTILES`]; empty for an
/// empty histogram.
pub(crate) fn percentile_points(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    PERCENTILES.iter().map(|&p| (p, h.value_at_percentile(p))).collect()
}

/// The histogram (nanoseconds) as HdrHistogram's percentile distribution
/// text, values in milliseconds, five ticks per half-distance: the format
/// of `HistogramLogProcessor` and `wrk2 --latency`'s `.hgrm` files.
pub fn hgrm(h: &Histogram<u64>) -> String {
    const SCALE: f64 = 1e6; // ns per ms
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let value = v.value_iterated_to() as f64 / SCALE;
            if q < 1.0 {
                let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10} {:14.2}", 1.0 / (1.0 - q));
            } else {
                let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let sub_buckets = 1u64 << (2.0 * 10f64.powi(i32::from(h.sigfig()))).log2().ceil() as u32;
    let _ =
        writeln!(out, "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]", h.mean() / SCALE, h.stdev() / SCALE);
    let _ = writeln!(out, "#[Max     = {:12.3}, Total count    = {:12}]", h.max() as f64 / SCALE, h.len());
    let _ = writeln!(out, "#[Buckets = {:12}, SubBuckets     = {:12}]", h.buckets(), sub_buckets);
    out
}

/// The run as an SVG, 900×700: the latency percentile curve (x: the
/// percentile on a `1/(1-p)` log scale, y: latency in ms) over the
/// throughput of each interval (x: seconds into the window, y: msg/s).
pub fn plot_svg(report: &Report) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 700)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (top, bottom) = root.split_vertically(400);
        let points = percentile_points(&report.histogram);
        let title = format!(
            "switchboard-load {} -> {}: latency by percentile ({} messages)",
            report.mode,
            report.target,
            report.histogram.len()
        );
        let ms = |ns: u64| ns as f64 / 1e6;
        let y_max = points.iter().map(|&(_, ns)| ms(ns)).fold(0.0f64, f64::max).max(1e-3) * 1.1;
        let x_max = 1.0 / (1.0 - PERCENTILES[PERCENTILES.len() - 1] / 100.0);
        let mut chart = ChartBuilder::on(&top)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d((1.0f64..x_max).log_scale(), 0.0..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (ms)")
            .x_label_formatter(&|x| format!("{}", 100.0 * (1.0 - 1.0 / x)))
            .draw()
            .map_err(|e| e.to_string())?;
        let curve: Vec<(f64, f64)> =
            points.iter().map(|&(p, ns)| (1.0 / (1.0 - p / 100.0), ms(ns))).collect();
        chart.draw_series(LineSeries::new(curve, CURVE.stroke_width(2))).map_err(|e| e.to_string())?;

        let series: Vec<(f64, f64)> =
            report.intervals.iter().map(|i| ((i.start + i.length).as_secs_f64(), i.throughput)).collect();
        let t_max = series.iter().map(|p| p.0).fold(0.0f64, f64::max).max(1e-3);
        let r_max = series.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1.0) * 1.1;
        let mut chart = ChartBuilder::on(&bottom)
            .caption("throughput by interval", ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max, 0.0..r_max)
            .map_err(|e| e.to_string())?;
        chart.configure_mesh().x_desc("seconds").y_desc("msg/s").draw().map_err(|e| e.to_string())?;
        chart.draw_series(LineSeries::new(series, THROUGHPUT.stroke_width(2))).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Writes `bytes` to `path` through a temporary file beside it, renamed
/// into place once whole: never a partial file under the final name.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name =
        path.file_name().ok_or_else(|| io::Error::other(format!("{}: not a file name", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_lists_cumulative_counts_up_to_the_max() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let text = hgrm(&h);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows.first().unwrap()[2], "1");
        let last = rows.last().unwrap();
        assert_eq!((last[1], last[2], last.len()), ("1.000000000000", "1000", 3));
        assert!((last[0].parse::<f64>().unwrap() - 1.0).abs() < 0.002, "{last:?}");
        let counts: Vec<u64> = rows.iter().map(|r| r[2].parse().unwrap()).collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]));
        assert!(text.contains("Total count    =         1000]"), "{text}");
        assert!(text.contains("SubBuckets     =         2048]"), "{text}");
    }
}
