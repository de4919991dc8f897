//! One SVG chart per family: a panel per metric, a group of bars per case,
//! one bar per subject at its median with a p10–p90 whisker.
//!
//! plotters' SVG backend writes text as `<text>` with a generic font family
//! and no font file is read, so charts render the same on any machine.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::{
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::model::Family;

/// Bar colours, by subject order within a panel (netvlan and its peers).
const PALETTE: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(214, 39, 40),
];
const PANEL_HEIGHT: u32 = 380;
const BAR_PX: u32 = 26;

/// The bars of one metric.
struct Panel {
    title: String,
    cases: Vec<String>,
    subjects: Vec<String>,
    /// (case, subject, median, p10, p90)
    bars: Vec<(usize, usize, f64, f64, f64)>,
}

fn panels(family: &Family) -> Vec<Panel> {
    let mut panels: Vec<Panel> = Vec::new();
    for m in &family.measurements {
        let title = format!("{} ({})", m.metric, m.unit);
        let idx = match panels.iter().position(|p| p.title == title) {
            Some(i) => i,
            None => {
                panels.push(Panel {
                    title,
                    cases: Vec::new(),
                    subjects: Vec::new(),
                    bars: Vec::new(),
                });
                panels.len() - 1
            }
        };
        let p = &mut panels[idx];
        let case = index_of(&mut p.cases, &m.case);
        let subject = index_of(&mut p.subjects, &m.subject);
        let s = &m.summary;
        p.bars.push((case, subject, s.median, s.p10, s.p90));
    }
    panels
}

fn index_of(list: &mut Vec<String>, item: &str) -> usize {
    match list.iter().position(|x| x == item) {
        Some(i) => i,
        None => {
            list.push(item.to_string());
            list.len() - 1
        }
    }
}

/// Writes the family's chart to `path`.
pub fn render(family: &Family, path: &Path) -> Result<()> {
    let panels = panels(family);
    if panels.is_empty() {
        return Err(anyhow!("{}: nothing to chart", family.key));
    }
    let width = panels
        .iter()
        .map(|p| {
            let longest = p.cases.iter().map(|c| c.len()).max().unwrap_or(0) as u32;
            let group = ((p.subjects.len() as u32 + 1) * BAR_PX).max(longest * 7 + 16);
            140 + p.cases.len() as u32 * group
        })
        .max()
        .unwrap_or(900)
        .max(900);
    let height = PANEL_HEIGHT * panels.len() as u32 + 40;
    let root = SVGBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (title_area, body) = root.split_vertically(40);
    title_area
        .draw(&Text::new(
            family.title.to_string(),
            (width as i32 / 2, 10),
            TextStyle::from(("sans-serif", 22).into_font()).pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(plot_err)?;
    for (panel, area) in panels.iter().zip(body.split_evenly((panels.len(), 1))) {
        draw_panel(panel, &area, &root)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

fn draw_panel(
    panel: &Panel,
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    root: &DrawingArea<SVGBackend, plotters::coord::Shift>,
) -> Result<()> {
    let slots = panel.subjects.len() + 1;
    let x_max = (panel.cases.len() * slots) as f64;
    let y_max = panel
        .bars
        .iter()
        .map(|b| b.2.max(b.4))
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE)
        * 1.35;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_labels(8)
        .y_label_formatter(&|v| short(*v))
        .draw()
        .map_err(plot_err)?;
    for (s, subject) in panel.subjects.iter().enumerate() {
        let color = PALETTE[s % PALETTE.len()];
        let bars = panel.bars.iter().filter(|b| b.1 == s);
        chart
            .draw_series(bars.clone().map(|&(c, _, median, _, _)| {
                let x = (c * slots + s) as f64 + 0.5;
                Rectangle::new([(x + 0.08, 0.0), (x + 0.92, median)], color.filled())
            }))
            .map_err(plot_err)?
            .label(subject.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        chart
            .draw_series(bars.filter(|b| b.3 < b.4).map(|&(c, _, _, p10, p90)| {
                let x = (c * slots + s) as f64 + 1.0;
                PathElement::new(vec![(x, p10), (x, p90)], BLACK.stroke_width(1))
            }))
            .map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(plot_err)?;
    // Case names under each group, placed in the chart's pixel space.
    for (c, case) in panel.cases.iter().enumerate() {
        let center = (c * slots) as f64 + 0.5 + (slots - 1) as f64 / 2.0;
        let (px, py) = chart.backend_coord(&(center, 0.0));
        root.draw(&Text::new(
            case.clone(),
            (px, py + 8),
            TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(plot_err)?;
    }
    Ok(())
}

/// An axis value with as few digits as it needs.
fn short(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the chart: {e:?}")
}
