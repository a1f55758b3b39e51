//! SVG charts of a scenario's curves: one file, one or more panels side by side, each a log-log
//! plot of several series (watchcache and its peers on the same axes). Drawn with `plotters`'
//! SVG backend only: text is left to the SVG viewer's fonts, so no font library is needed.

use std::path::Path;

use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;

/// One curve: (x, y) points, a colour index shared by the curves of one peer, solid or dashed.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub color: usize,
    pub dashed: bool,
    pub points: Vec<(f64, f64)>,
}

/// One plot.
#[derive(Clone, Debug)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

const COLORS: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x17, 0xbe, 0xcf),
];

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut low, mut high) = (f64::INFINITY, 0.0f64);
    for value in values.filter(|value| value.is_finite() && *value > 0.0) {
        low = low.min(value);
        high = high.max(value);
    }
    if !low.is_finite() {
        return (1.0, 10.0);
    }
    // A decade's margin at most, and some room for points on the edge.
    (low / 1.5, high * 1.5)
}

/// Writes `panels` side by side into the SVG file `path`, under `title`.
pub fn write_svg(path: &Path, title: &str, panels: &[Panel]) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    }
    let width = 560 * panels.len().max(1) as u32;
    let root = SVGBackend::new(path, (width, 460)).into_drawing_area();
    let error = |error: DrawingAreaErrorKind<_>| format!("drawing {}: {error}", path.display());
    root.fill(&WHITE).map_err(error)?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(error)?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (panel, area) in panels.iter().zip(areas.iter()) {
        let (x_low, x_high) =
            bounds(panel.series.iter().flat_map(|series| series.points.iter().map(|p| p.0)));
        let (y_low, y_high) =
            bounds(panel.series.iter().flat_map(|series| series.points.iter().map(|p| p.1)));
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((x_low..x_high).log_scale(), (y_low..y_high).log_scale())
            .map_err(error)?;
        chart
            .configure_mesh()
            // Log axes have a light line per minor tick: too dense to read; the bold ones stay.
            .light_line_style(TRANSPARENT)
            .bold_line_style(BLACK.mix(0.15))
            .x_desc(panel.x_label.as_str())
            .y_desc(panel.y_label.as_str())
            .x_label_formatter(&|x| short(*x))
            .y_label_formatter(&|y| short(*y))
            .draw()
            .map_err(error)?;
        for series in &panel.series {
            let color = COLORS[series.color % COLORS.len()];
            let style = ShapeStyle { color: color.to_rgba(), filled: false, stroke_width: 2 };
            let points: Vec<(f64, f64)> =
                series.points.iter().copied().filter(|(x, y)| *x > 0.0 && *y > 0.0).collect();
            let legend = if series.dashed {
                chart.draw_series(DashedLineSeries::new(points.clone(), 6, 4, style)).map_err(error)?
            } else {
                chart.draw_series(LineSeries::new(points.clone(), style)).map_err(error)?
            };
            legend.label(series.name.as_str()).legend(move |(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 20, y)],
                    ShapeStyle { color: color.to_rgba(), filled: false, stroke_width: 2 },
                )
            });
            chart
                .draw_series(points.iter().map(|point| Circle::new(*point, 3, color.filled())))
                .map_err(error)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 11))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(error)?;
    }
    root.present().map_err(error)?;
    Ok(())
}

/// A tick label: 1, 20, 300, 4k, 50k, 1.2M.
fn short(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1e6 {
        format!("{}M", trim(value / 1e6))
    } else if magnitude >= 1e3 {
        format!("{}k", trim(value / 1e3))
    } else {
        trim(value)
    }
}

fn trim(value: f64) -> String {
    if value >= 100.0 || value == value.round() {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}
