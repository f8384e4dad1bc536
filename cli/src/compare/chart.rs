//! The SVG chart of a comparison, like the seed's IO graphs: bytes on the wire over time, one
//! line per transport; cumulative above, per second below.

use std::path::Path;

use plotters::prelude::*;

use crate::error::CliError;

/// Line colours, told apart in print and by most colour-blind readers (Tableau 10).
const COLORS: [RGBColor; 7] = [
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
];

/// The colour of the "last comment sent" marker: wide and pale, so it shows over the grid.
const MARKER: RGBAColor = RGBAColor(0, 0, 0, 0.25);

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// One transport's line: its label and `(seconds, cumulative bytes both ways)` samples.
pub struct Line {
    /// The legend.
    pub label: String,
    /// Samples in time order, starting at 0 s.
    pub points: Vec<(f64, u64)>,
}

/// Bytes per second between samples about one second apart.
fn per_second(points: &[(f64, u64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut last = match points.first() {
        Some(&first) => first,
        None => return out,
    };
    for &(t, bytes) in &points[1..] {
        let dt = t - last.0;
        if dt >= 0.999 {
            out.push((t, bytes.saturating_sub(last.1) as f64 / dt));
            last = (t, bytes);
        }
    }
    out
}

/// Draws `lines` into an SVG file at `path`; `subtitle` describes the run, and a grey line marks
/// `stream_end` (seconds), after which only late polls move bytes.
pub fn draw(path: &Path, lines: &[Line], subtitle: &str, stream_end: f64) -> Result<(), CliError> {
    draw_inner(path, lines, subtitle, stream_end)
        .map_err(|e| CliError::Io(std::io::Error::other(format!("{}: {e}", path.display()))))
}

fn draw_inner(
    path: &Path,
    lines: &[Line],
    subtitle: &str,
    stream_end: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1100, 820)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(50);
    title.draw(&Text::new(
        format!("Bytes on the wire per transport — {subtitle}"),
        (20, 18),
        ("sans-serif", 20).into_font(),
    ))?;
    let (top, bottom) = body.split_vertically(385);

    let t_max = lines
        .iter()
        .filter_map(|l| l.points.last().map(|p| p.0))
        .fold(1.0_f64, f64::max);
    let kib = |b: f64| b / 1024.0;

    let total_max = lines
        .iter()
        .filter_map(|l| l.points.last().map(|p| kib(p.1 as f64)))
        .fold(1.0_f64, f64::max);
    let mut cumulative = ChartBuilder::on(&top)
        .caption(
            "cumulative, both ways, all viewers (KiB)",
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..total_max * 1.08)?;
    cumulative
        .configure_mesh()
        .x_desc("seconds since the stream started")
        .y_desc("KiB")
        .draw()?;
    for (i, line) in lines.iter().enumerate() {
        let color = color(i);
        cumulative
            .draw_series(LineSeries::new(
                line.points.iter().map(|&(t, b)| (t, kib(b as f64))),
                color.stroke_width(2),
            ))?
            .label(line.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    let top_y = total_max * 1.08;
    cumulative
        .draw_series(LineSeries::new(
            [(stream_end, 0.0), (stream_end, top_y)],
            MARKER.stroke_width(4),
        ))?
        .label("end of the comment stream")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MARKER.stroke_width(4)));
    cumulative
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    let rates: Vec<Vec<(f64, f64)>> = lines.iter().map(|l| per_second(&l.points)).collect();
    let rate_max = rates
        .iter()
        .flatten()
        .map(|&(_, r)| kib(r))
        .fold(0.1_f64, f64::max);
    let mut rate = ChartBuilder::on(&bottom)
        .caption(
            "per second, both ways, all viewers (KiB/s)",
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..rate_max * 1.08)?;
    rate.configure_mesh()
        .x_desc("seconds since the stream started")
        .y_desc("KiB/s")
        .draw()?;
    rate.draw_series(LineSeries::new(
        [(stream_end, 0.0), (stream_end, rate_max * 1.08)],
        MARKER.stroke_width(4),
    ))?;
    for (i, points) in rates.iter().enumerate() {
        let color = color(i);
        rate.draw_series(LineSeries::new(
            points.iter().map(|&(t, r)| (t, kib(r))),
            color.stroke_width(2),
        ))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_second_rates_come_from_samples_a_second_apart() {
        let points = [(0.0, 0), (0.5, 100), (1.0, 1000), (1.5, 1000), (2.0, 3000)];
        assert_eq!(per_second(&points), vec![(1.0, 1000.0), (2.0, 2000.0)]);
    }

    #[test]
    fn draws_an_svg_with_every_label() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.svg");
        let lines = vec![
            Line {
                label: "short poll 1 s".into(),
                points: vec![(0.0, 0), (1.0, 2048), (2.0, 4096)],
            },
            Line {
                label: "WebSocket".into(),
                points: vec![(0.0, 0), (1.0, 300), (2.0, 600)],
            },
        ];
        draw(&path, &lines, "test", 1.5).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..50]);
        assert!(svg.contains("short poll 1 s") && svg.contains("WebSocket"));
    }
}
