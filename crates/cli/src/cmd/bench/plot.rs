//! `--plot F.svg`: Mpps, build time and memory of every set, side by side.
//! Mpps come from the threads' CPU time (what a busy machine distorts least;
//! the wall-clock figures are in the output).
//!
//! Drawn with `plotters` (SVG backend, no font files needed: the SVG names
//! a sans-serif font and the viewer draws the text).

use std::path::Path;

use plotters::prelude::*;

use super::{Args, SetResult};

/// The date (UTC) of `secs` since the Unix epoch, as `YYYY-MM-DD`.
fn date(secs: u64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Draws the chart of `sets` into `out`.
pub(super) fn draw(out: &Path, sets: &[SetResult], cpu: &str, args: &Args) -> Result<(), String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let lookup = match (args.classifier, args.scalar) {
        (super::Kind::Linear, _) => "linear reference",
        (_, true) => "compiled, scalar lookup",
        (_, false) => "compiled",
    };
    let title = format!(
        "palisade bench: {} set(s), {} thread(s), {lookup} — {cpu} — {}",
        sets.len(),
        args.threads,
        date(now)
    );
    let width = 360 + 120 * sets.len() as u32;
    let root = SVGBackend::new(out, (width.max(900), 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, body) = root.split_vertically(50);
    top.titled(&title, ("sans-serif", 18))
        .map_err(|e| e.to_string())?;
    let panels = body.split_evenly((1, 3));
    let names: Vec<String> = sets
        .iter()
        .map(|s| format!("{} ({} rules)", s.name, s.rules))
        .collect();
    let series: [(&str, Vec<f64>, RGBColor); 3] = [
        (
            "Mpps (higher is better)",
            sets.iter().map(|s| s.mpps).collect(),
            RGBColor(31, 119, 180),
        ),
        (
            "build time, ms",
            sets.iter().map(|s| s.build_ms).collect(),
            RGBColor(255, 127, 14),
        ),
        (
            "memory, MiB",
            sets.iter()
                .map(|s| s.memory_bytes as f64 / (1 << 20) as f64)
                .collect(),
            RGBColor(44, 160, 44),
        ),
    ];
    for (panel, (caption, values, color)) in panels.iter().zip(series) {
        let top = values.iter().cloned().fold(0.0f64, f64::max).max(1e-9) * 1.15;
        let mut chart = ChartBuilder::on(panel)
            .caption(caption, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(110)
            .y_label_area_size(55)
            .build_cartesian_2d((0..names.len()).into_segmented(), 0.0..top)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(names.len().max(1))
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .x_label_style(
                ("sans-serif", 11)
                    .into_font()
                    .transform(FontTransform::Rotate90)
                    .color(&BLACK),
            )
            .y_label_style(("sans-serif", 11))
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(values.iter().enumerate().map(|(i, v)| {
                let mut bar = Rectangle::new(
                    [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), *v)],
                    color.filled(),
                );
                bar.set_margin(0, 0, 6, 6);
                bar
            }))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(values.iter().enumerate().map(|(i, v)| {
                Text::new(
                    format!("{v:.1}"),
                    (SegmentValue::CenterOf(i), *v + top * 0.01),
                    ("sans-serif", 11).into_font().color(&BLACK),
                )
            }))
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_of_known_days() {
        assert_eq!(super::date(0), "1970-01-01");
        assert_eq!(super::date(951_782_400), "2000-02-29");
        assert_eq!(super::date(1_796_601_600), "2026-12-07");
    }
}
