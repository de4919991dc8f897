//! What a benchmark run produces: measurements, ratios against peers,
//! goals, and what could not be measured yet. Serialised as the results
//! JSON; the Markdown report and the charts are rendered from it.

use anyhow::{bail, Result};
use serde::Serialize;

use super::{machine::Machine, stats::Summary};

/// Bumped when the JSON layout changes incompatibly.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: u32,
    /// UTC date of the run (`YYYY-MM-DD`), also the results file's name.
    pub date: String,
    /// UTC start time, RFC 3339.
    pub started_at: String,
    /// `full` or `quick` (smoke run: fewer repeats, smaller N).
    pub mode: &'static str,
    /// The `--only` filter, when the run was partial.
    pub only: Option<String>,
    pub wall_seconds: f64,
    pub machine: Machine,
    pub families: Vec<Family>,
    /// Whole scenarios of the issue that cannot be measured yet, and why.
    pub unavailable: Vec<Unavailable>,
}

/// One scenario family (one chart, one section of BENCHMARKS.md).
#[derive(Debug, Serialize)]
pub struct Family {
    /// Short name, as given to `--only`.
    pub key: &'static str,
    pub title: &'static str,
    /// How the family was measured, one point per entry.
    pub method: Vec<String>,
    pub measurements: Vec<Measurement>,
    pub comparisons: Vec<Comparison>,
    /// Variants the issue asks for that cannot be measured yet, and why.
    pub unavailable: Vec<Unavailable>,
}

/// Which way is better for a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Lower,
    Higher,
}

/// Repeated samples of one metric for one subject in one case.
#[derive(Debug, Serialize)]
pub struct Measurement {
    /// What was measured: netvlan, or a peer (`floor`, `xdp-filter`, …).
    pub subject: String,
    /// The situation: frame kind, path, scale…
    pub case: String,
    pub metric: String,
    pub unit: String,
    pub better: Better,
    pub summary: Summary,
    /// Raw samples in measurement order (round by round).
    pub samples: Vec<f64>,
    /// Tool, repeat count, sizes: enough to reproduce this number.
    pub method: String,
    /// Secondary figures taken in the same runs (e.g. peak RSS).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aux: Vec<Aux>,
}

#[derive(Debug, Serialize)]
pub struct Aux {
    pub name: String,
    pub unit: String,
    pub summary: Summary,
}

impl Measurement {
    /// Fails when there is no sample: a missing measurement is an error,
    /// never a zero.
    pub fn new(
        subject: &str,
        case: &str,
        metric: &str,
        unit: &str,
        better: Better,
        samples: Vec<f64>,
        method: String,
    ) -> Result<Self> {
        let Some(summary) = Summary::of(&samples) else {
            bail!("{subject} / {case} / {metric}: no valid samples ({samples:?})");
        };
        Ok(Measurement {
            subject: subject.into(),
            case: case.into(),
            metric: metric.into(),
            unit: unit.into(),
            better,
            summary,
            samples,
            method,
            aux: Vec::new(),
        })
    }

    pub fn with_aux(mut self, name: &str, unit: &str, samples: &[f64]) -> Result<Self> {
        let Some(summary) = Summary::of(samples) else {
            bail!(
                "{} / {}: no valid samples for {name}",
                self.subject,
                self.case
            );
        };
        self.aux.push(Aux {
            name: name.into(),
            unit: unit.into(),
            summary,
        });
        Ok(self)
    }
}

/// `subject / peer` for one metric in one case.
#[derive(Debug, Serialize)]
pub struct Comparison {
    pub case: String,
    pub metric: String,
    pub subject: String,
    pub peer: String,
    /// Subject divided by peer (in the metric's unit: for a time, below 1
    /// means the subject is faster; for a throughput, above 1).
    pub ratio: f64,
    /// p10 and p90 of the per-round ratios, when samples were paired.
    pub spread: Option<[f64; 2]>,
    /// How the ratio was formed.
    pub basis: String,
    pub goal: Option<Goal>,
}

/// Which statistic of two measurements a comparison divides.
#[derive(Clone, Copy, Debug)]
pub enum Basis {
    /// Samples taken round by round, interleaved: the median of the
    /// per-round ratios (drift of a shared machine hits both sides).
    Paired,
    /// Median over median (independent samples).
    Medians,
    /// p99 over p99.
    P99,
}

impl Comparison {
    pub fn new(subject: &Measurement, peer: &Measurement, basis: Basis) -> Result<Self> {
        let (ratio, spread, text) = match basis {
            Basis::Paired => {
                if subject.samples.len() != peer.samples.len() {
                    bail!(
                        "{} vs {} ({}): samples are not paired ({} vs {})",
                        subject.subject,
                        peer.subject,
                        subject.case,
                        subject.samples.len(),
                        peer.samples.len()
                    );
                }
                let ratios: Vec<f64> = subject
                    .samples
                    .iter()
                    .zip(&peer.samples)
                    .map(|(s, p)| s / p)
                    .collect();
                let Some(r) = Summary::of(&ratios) else {
                    bail!(
                        "{} vs {} ({}): a peer sample is zero",
                        subject.subject,
                        peer.subject,
                        subject.case
                    );
                };
                (
                    r.median,
                    Some([r.p10, r.p90]),
                    format!("median of {} per-round ratios", r.n),
                )
            }
            Basis::Medians => (
                subject.summary.median / peer.summary.median,
                None,
                "median / median".to_string(),
            ),
            Basis::P99 => (
                subject.summary.p99 / peer.summary.p99,
                None,
                "p99 / p99".to_string(),
            ),
        };
        if !ratio.is_finite() || ratio <= 0.0 {
            bail!(
                "{} vs {} ({}): ratio {ratio} is not a positive number",
                subject.subject,
                peer.subject,
                subject.case
            );
        }
        Ok(Comparison {
            case: subject.case.clone(),
            metric: subject.metric.clone(),
            subject: subject.subject.clone(),
            peer: peer.subject.clone(),
            ratio,
            spread,
            basis: text,
            goal: None,
        })
    }

    /// Attaches a goal and judges it against the measured ratio.
    pub fn set_goal(&mut self, text: &str, bound: Bound, note: Option<&str>) -> &mut Self {
        let met = match bound {
            Bound::AtMost(limit) => self.ratio <= limit,
            Bound::AtLeast(limit) => self.ratio >= limit,
        };
        self.goal = Some(Goal {
            text: text.into(),
            bound,
            met,
            note: note.map(str::to_string),
        });
        self
    }
}

/// A goal from the issue, on a comparison's ratio.
#[derive(Debug, Serialize)]
pub struct Goal {
    pub text: String,
    pub bound: Bound,
    pub met: bool,
    /// What the verdict is conditional on (e.g. measured with policies off).
    pub note: Option<String>,
}

#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    AtMost(f64),
    AtLeast(f64),
}

/// A variant the issue asks for that this build cannot measure yet.
#[derive(Debug, Serialize)]
pub struct Unavailable {
    pub name: String,
    pub reason: String,
}

impl Unavailable {
    pub fn new(name: &str, reason: &str) -> Self {
        Unavailable {
            name: name.into(),
            reason: reason.into(),
        }
    }
}

impl Family {
    pub fn measurement(&self, subject: &str, case: &str, metric: &str) -> Result<&Measurement> {
        match self
            .measurements
            .iter()
            .find(|m| m.subject == subject && m.case == case && m.metric == metric)
        {
            Some(m) => Ok(m),
            None => bail!("{}: no measurement {subject} / {case} / {metric}", self.key),
        }
    }

    /// Adds `subject / peer` for a case and metric both were measured in.
    pub fn compare(
        &mut self,
        subject: &str,
        peer: &str,
        case: &str,
        metric: &str,
        basis: Basis,
    ) -> Result<&mut Comparison> {
        let c = Comparison::new(
            self.measurement(subject, case, metric)?,
            self.measurement(peer, case, metric)?,
            basis,
        )?;
        self.comparisons.push(c);
        Ok(self.comparisons.last_mut().expect("just pushed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(subject: &str, samples: Vec<f64>) -> Measurement {
        Measurement::new(
            subject,
            "case",
            "time",
            "ns",
            Better::Lower,
            samples,
            String::new(),
        )
        .unwrap()
    }

    #[test]
    fn paired_ratio_is_the_median_of_per_round_ratios() {
        let c = Comparison::new(
            &m("a", vec![2.0, 30.0, 4.0]),
            &m("b", vec![1.0, 10.0, 1.0]),
            Basis::Paired,
        )
        .unwrap();
        assert_eq!(c.ratio, 3.0);
        let mut c = c;
        c.set_goal("at most 3x", Bound::AtMost(3.0), None);
        assert!(c.goal.unwrap().met);
    }

    #[test]
    fn missing_samples_are_errors_not_zeros() {
        assert!(
            Measurement::new("a", "c", "t", "ns", Better::Lower, vec![], String::new()).is_err()
        );
        assert!(Comparison::new(&m("a", vec![1.0]), &m("b", vec![0.0]), Basis::Paired).is_err());
        assert!(
            Comparison::new(&m("a", vec![1.0]), &m("b", vec![1.0, 2.0]), Basis::Paired).is_err()
        );
    }
}
