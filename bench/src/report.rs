//! Turns the runs into figures (best of the rounds), ratios to direct and to
//! HAProxy, Respawn's verdict against each goal from issue 6, and renders
//! them as a markdown table and JSON.
//!
//! Past 500 lines: the table of figures (label, unit, goal for each) is most
//! of it, and is read as one list.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::scenarios::Scenario;

pub const DIRECT: &str = "direct";
pub const RESPAWN: &str = "respawn";
pub const HAPROXY: &str = "haproxy";

/// One number a scenario reports for a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Figure {
    StatusCached,
    StatusRelayed,
    LoginRate,
    /// Logins the server refuses with its own Disconnect (a full server, a whitelist).
    LoginRefusedRate,
    BulkMbps,
    BulkSlowerMbps,
    BulkOnlineMbps,
    BulkOnlineSlowerMbps,
    LatencyP50,
    LatencyP99,
    LatencyP999,
    IdleKib,
    IdleP99Before,
    IdleP99,
    /// Derived: best `IdleP99` − best `IdleP99Before` of the same target.
    IdleP99Growth,
    Routes100k,
    WakeSignalP99,
    WakeSignalMean,
    WakeJoin,
    ControllerReconcile,
    ControllerBaseline,
    ControllerPeakRss,
    ControllerRssGrowth,
    ControllerWakeP50,
    ControllerWakeP99,
}

/// How a target's figure is set against a reference target's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Compare {
    /// `value / reference` (throughputs, memory).
    Ratio,
    /// `value − reference` (latencies: what the proxy adds).
    Added,
    /// Shown alone: the figure is already a difference within one target.
    Alone,
}

/// What Respawn must reach (issue 6, MISSION.md).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// At least `factor` × the same figure of target `of`.
    AtLeast { of: &'static str, factor: f64 },
    /// At most `micros` above direct's same figure.
    AddedAtMost { micros: f64 },
    /// At most this value.
    AtMost { value: f64 },
    /// At least `factor` × Respawn's own figure `of` (same run).
    AtLeastOwn { of: Figure, factor: f64 },
}

pub struct Def {
    pub scenario: Scenario,
    pub label: &'static str,
    pub unit: &'static str,
    pub decimals: usize,
    pub higher_is_better: bool,
    pub compare: Compare,
    pub goal: Option<Goal>,
}

impl Figure {
    pub const ALL: [Figure; 25] = [
        Figure::StatusCached,
        Figure::StatusRelayed,
        Figure::LoginRate,
        Figure::LoginRefusedRate,
        Figure::BulkMbps,
        Figure::BulkSlowerMbps,
        Figure::BulkOnlineMbps,
        Figure::BulkOnlineSlowerMbps,
        Figure::LatencyP50,
        Figure::LatencyP99,
        Figure::LatencyP999,
        Figure::IdleKib,
        Figure::IdleP99Before,
        Figure::IdleP99,
        Figure::IdleP99Growth,
        Figure::Routes100k,
        Figure::WakeSignalP99,
        Figure::WakeSignalMean,
        Figure::WakeJoin,
        Figure::ControllerReconcile,
        Figure::ControllerBaseline,
        Figure::ControllerPeakRss,
        Figure::ControllerRssGrowth,
        Figure::ControllerWakeP50,
        Figure::ControllerWakeP99,
    ];

    pub fn def(self) -> Def {
        use Compare::*;
        let rate = |scenario, label, goal| Def {
            scenario,
            label,
            unit: "/s",
            decimals: 0,
            higher_is_better: true,
            compare: Ratio,
            goal: Some(goal),
        };
        let micros = |scenario, label, goal| Def {
            scenario,
            label,
            unit: " µs",
            decimals: 0,
            higher_is_better: false,
            compare: Added,
            goal,
        };
        match self {
            Figure::StatusCached => rate(
                Scenario::StatusCached,
                "status pings/s, Respawn answering from its cache",
                Goal::AtLeast { of: DIRECT, factor: 1.0 },
            ),
            Figure::StatusRelayed => rate(
                Scenario::StatusRelayed,
                "status pings/s, cache bypassed (every ping relayed)",
                Goal::AtLeast { of: HAPROXY, factor: 1.0 },
            ),
            Figure::LoginRate => rate(Scenario::Login, "login connects/s", Goal::AtLeast { of: HAPROXY, factor: 1.0 }),
            Figure::LoginRefusedRate => rate(
                Scenario::LoginRefused,
                "refused logins/s (the server's own Disconnect, passed on as it is)",
                Goal::AtLeast { of: HAPROXY, factor: 1.0 },
            ),
            Figure::BulkMbps => Def {
                scenario: Scenario::Bulk,
                label: "bulk relay, MB/s up + down",
                unit: " MB/s",
                decimals: 0,
                higher_is_better: true,
                compare: Ratio,
                goal: Some(Goal::AtLeast { of: HAPROXY, factor: 1.2 }),
            },
            Figure::BulkSlowerMbps => Def {
                scenario: Scenario::Bulk,
                label: "bulk relay, MB/s of the slower direction",
                unit: " MB/s",
                decimals: 0,
                higher_is_better: true,
                compare: Ratio,
                goal: None,
            },
            Figure::BulkOnlineMbps => Def {
                scenario: Scenario::BulkOnline,
                label: "bulk relay after an online-mode login, MB/s up + down",
                unit: " MB/s",
                decimals: 0,
                higher_is_better: true,
                compare: Ratio,
                goal: Some(Goal::AtLeast { of: HAPROXY, factor: 1.2 }),
            },
            Figure::BulkOnlineSlowerMbps => Def {
                scenario: Scenario::BulkOnline,
                label: "bulk relay after an online-mode login, MB/s of the slower direction",
                unit: " MB/s",
                decimals: 0,
                higher_is_better: true,
                compare: Ratio,
                goal: None,
            },
            Figure::LatencyP50 => micros(Scenario::Latency, "login latency p50 (connect → first backend byte)", None),
            Figure::LatencyP99 => {
                micros(Scenario::Latency, "login latency p99", Some(Goal::AddedAtMost { micros: 100.0 }))
            }
            Figure::LatencyP999 => micros(Scenario::Latency, "login latency p99.9", None),
            Figure::IdleKib => Def {
                scenario: Scenario::Idle,
                label: "proxy RSS per idle relayed session",
                unit: " KiB",
                decimals: 1,
                higher_is_better: false,
                compare: Ratio,
                goal: Some(Goal::AtMost { value: 4.0 }),
            },
            Figure::IdleP99Before => {
                micros(Scenario::Idle, "login latency p99 before the idle sessions are opened", None)
            }
            Figure::IdleP99 => micros(Scenario::Idle, "login latency p99 with the idle sessions open", None),
            Figure::IdleP99Growth => Def {
                scenario: Scenario::Idle,
                label: "login latency p99 growth, no idle sessions → all open (same target)",
                unit: " µs",
                decimals: 0,
                higher_is_better: false,
                compare: Alone,
                goal: Some(Goal::AtMost { value: 100.0 }),
            },
            Figure::WakeSignalP99 => Def {
                scenario: Scenario::Wake,
                label: "Login Start → wake signal, p99 (upper bucket bound of Respawn's histogram)",
                unit: " µs",
                decimals: 0,
                higher_is_better: false,
                compare: Alone,
                goal: Some(Goal::AtMost { value: 5_000.0 }),
            },
            Figure::WakeSignalMean => Def {
                scenario: Scenario::Wake,
                label: "Login Start → wake signal, mean",
                unit: " µs",
                decimals: 0,
                higher_is_better: false,
                compare: Alone,
                goal: None,
            },
            Figure::WakeJoin => Def {
                scenario: Scenario::Wake,
                label: "held login → backend's login success through the wake, median of 32",
                unit: " ms",
                decimals: 0,
                higher_is_better: false,
                compare: Alone,
                goal: None,
            },
            Figure::ControllerReconcile => Def {
                scenario: Scenario::Controller,
                label: "MinecraftServers (--mcs) fully reconciled: controller start → every StatefulSet, Service and status written",
                unit: " s",
                decimals: 2,
                higher_is_better: false,
                compare: Alone,
                goal: Some(Goal::AtMost { value: 60.0 }),
            },
            Figure::ControllerBaseline => Def {
                scenario: Scenario::Controller,
                label: "the same requests from a bare kube client (the fake API server's floor)",
                unit: " s",
                decimals: 2,
                higher_is_better: false,
                compare: Alone,
                goal: None,
            },
            Figure::ControllerPeakRss => Def {
                scenario: Scenario::Controller,
                label: "controller peak RSS (VmHWM) over the run",
                unit: " MiB",
                decimals: 1,
                higher_is_better: false,
                compare: Alone,
                goal: Some(Goal::AtMost { value: 256.0 }),
            },
            Figure::ControllerRssGrowth => Def {
                scenario: Scenario::Controller,
                label: "controller peak RSS − the same controller's RSS with no servers",
                unit: " MiB",
                decimals: 1,
                higher_is_better: false,
                compare: Alone,
                goal: None,
            },
            Figure::ControllerWakeP50 => Def {
                scenario: Scenario::Controller,
                label: "wake annotation written → StatefulSet replicas write reaches the API server, p50 (after the cold start)",
                unit: " ms",
                decimals: 1,
                higher_is_better: false,
                compare: Alone,
                goal: None,
            },
            Figure::ControllerWakeP99 => Def {
                scenario: Scenario::Controller,
                label: "wake annotation → StatefulSet replicas write, p99",
                unit: " ms",
                decimals: 1,
                higher_is_better: false,
                compare: Alone,
                goal: Some(Goal::AtMost { value: 100.0 }),
            },
            Figure::Routes100k => rate(
                Scenario::Routes100k,
                "login connects/s with 100,000 routes",
                Goal::AtLeastOwn { of: Figure::LoginRate, factor: 0.9 },
            ),
        }
    }
}

/// One scenario on one target in one round.
#[derive(Debug, Serialize)]
pub struct Run {
    pub scenario: Scenario,
    pub target: String,
    pub round: usize,
    pub ok: bool,
    pub error: Option<String>,
    pub figures: BTreeMap<Figure, f64>,
    pub details: Map<String, Value>,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub kernel: String,
    pub cpu_model: String,
    pub open_files_limit: u64,
    pub loadavg_at_start: String,
    pub haproxy_version: Option<String>,
    pub respawn_commit: Option<String>,
    pub respawn_binary_built: Option<String>,
}

/// One row of the table: a figure's best value per target and how they compare.
#[derive(Debug, Serialize)]
pub struct Row {
    pub figure: Figure,
    pub scenario: Scenario,
    pub label: &'static str,
    pub unit: &'static str,
    pub values: BTreeMap<String, f64>,
    /// `value / direct` (ratios) or `value − direct` in µs (latencies).
    pub vs_direct: BTreeMap<String, f64>,
    pub vs_haproxy: BTreeMap<String, f64>,
    pub goal: Option<String>,
    pub respawn_met: Option<bool>,
    /// What the verdict was judged on, e.g. `0.67× haproxy` or `+68 µs`.
    pub achieved: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub started_at: String,
    pub total_seconds: f64,
    pub command: String,
    pub machine: Machine,
    pub settings: Value,
    pub notes: Vec<String>,
    pub targets: Vec<String>,
    pub rows: Vec<Row>,
    pub failures: Vec<String>,
    pub runs: Vec<Run>,
}

/// The best value of `figure` for `target` over its successful rounds.
fn best(runs: &[Run], figure: Figure, target: &str) -> Option<f64> {
    if figure == Figure::IdleP99Growth {
        // From the least disturbed probe on each side: a difference taken
        // within one round would let a burst before the sessions open pass
        // for negative growth.
        return Some(best(runs, Figure::IdleP99, target)? - best(runs, Figure::IdleP99Before, target)?);
    }
    let higher = figure.def().higher_is_better;
    runs.iter()
        .filter(|r| r.ok && r.target == target)
        .filter_map(|r| r.figures.get(&figure).copied())
        .reduce(|a, b| if (b > a) == higher { b } else { a })
}

fn compare(def: &Def, value: f64, reference: f64) -> Option<f64> {
    match def.compare {
        Compare::Ratio if reference > 0.0 => Some(value / reference),
        Compare::Ratio => None,
        Compare::Added => Some(value - reference),
        Compare::Alone => None,
    }
}

pub fn rows(runs: &[Run], targets: &[String]) -> Vec<Row> {
    let mut rows = Vec::new();
    for figure in Figure::ALL {
        let def = figure.def();
        let values: BTreeMap<String, f64> =
            targets.iter().filter_map(|t| best(runs, figure, t).map(|v| (t.clone(), v))).collect();
        if values.is_empty() && !runs.iter().any(|r| r.scenario == def.scenario) {
            continue;
        }
        let against = |reference: &str| -> BTreeMap<String, f64> {
            let Some(&base) = values.get(reference) else { return BTreeMap::new() };
            values
                .iter()
                .filter(|(t, _)| t.as_str() != reference)
                .filter_map(|(t, &v)| compare(&def, v, base).map(|c| (t.clone(), c)))
                .collect()
        };
        // Respawn's verdict, and the figure the goal is judged on.
        let verdict = def.goal.and_then(|goal| {
            let v = *values.get(RESPAWN)?;
            Some(match goal {
                Goal::AtLeast { of, factor } => {
                    let ratio = v / values.get(of)?;
                    (ratio >= factor, format!("{ratio:.2}× {of}"))
                }
                Goal::AddedAtMost { micros } => {
                    let added = v - values.get(DIRECT)?;
                    (
                        added <= micros,
                        format!("{}{} µs", if added < 0.0 { "−" } else { "+" }, thousands(added.abs(), 0)),
                    )
                }
                Goal::AtMost { value } => (v <= value, format!("{}{}", thousands(v, def.decimals), def.unit)),
                Goal::AtLeastOwn { of, factor } => {
                    let ratio = v / best(runs, of, RESPAWN)?;
                    (ratio >= factor, format!("{ratio:.2}×"))
                }
            })
        });
        let (respawn_met, achieved) = verdict.map_or((None, None), |(met, text)| (Some(met), Some(text)));
        rows.push(Row {
            figure,
            scenario: def.scenario,
            label: def.label,
            unit: def.unit,
            vs_direct: against(DIRECT),
            vs_haproxy: against(HAPROXY),
            values,
            goal: def.goal.map(|g| goal_text(g, def.unit)),
            respawn_met,
            achieved,
        });
    }
    rows
}

fn goal_text(goal: Goal, unit: &str) -> String {
    match goal {
        Goal::AtLeast { of, factor } => format!("≥ {factor:.1}× {of}"),
        Goal::AddedAtMost { micros } => format!("≤ +{micros:.0} µs over direct"),
        Goal::AtMost { value } => format!("≤ {}{unit}", thousands(value, 0)),
        Goal::AtLeastOwn { of, factor } => {
            format!("≥ {factor:.1}× Respawn's {}", of.def().label)
        }
    }
}

/// `1234567.8` → `1,234,568` (with `decimals` after the point).
pub fn thousands(value: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, value.abs());
    let (int, frac) = text.split_once('.').map_or((text.as_str(), None), |(i, f)| (i, Some(f)));
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(frac) = frac {
        out.push('.');
        out.push_str(frac);
    }
    if value < 0.0 && text.chars().any(|c| c.is_ascii_digit() && c != '0') {
        out.insert(0, '−');
    }
    out
}

fn relation(def: &Def, c: f64, reference: &str) -> String {
    match def.compare {
        Compare::Ratio => format!("{c:.2}× {reference}"),
        Compare::Added if c >= 0.0 => format!("+{} µs vs {reference}", thousands(c, 0)),
        Compare::Added | Compare::Alone => format!("−{} µs vs {reference}", thousands(-c, 0)),
    }
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        md.push_str("# Respawn benchmark results\n\n");
        md.push_str(&format!(
            "Run {} on {} CPUs ({}), Linux {}, open-files limit {}; load average at start {}.  \n",
            self.started_at, m.nproc, m.cpu_model, m.kernel, m.open_files_limit, m.loadavg_at_start
        ));
        md.push_str(&format!(
            "Checkout {} (respawn binary built {}); {}.  \nCommand: `{}` — {:.0} s in total.\n\n",
            m.respawn_commit.as_deref().unwrap_or("(commit unknown)"),
            m.respawn_binary_built.as_deref().unwrap_or("—"),
            m.haproxy_version.as_deref().unwrap_or("HAProxy not run"),
            self.command,
            self.total_seconds
        ));
        md.push_str(
            "The load generator, the backend and the proxy share the machine's cores, so every proxy \
             is far below direct; the ratios taken in the same run are what to compare. Each cell: \
             the best of the rounds, then its ratio (or, for latencies, the µs added) against direct \
             and HAProxy. See README.md for what each figure measures.\n\n",
        );
        md.push_str("| Scenario | Figure |");
        for t in &self.targets {
            md.push_str(&format!(" {t} |"));
        }
        md.push_str(" Respawn's goal | Met |\n|---|---|");
        for _ in &self.targets {
            md.push_str("---|");
        }
        md.push_str("---|---|\n");
        for row in &self.rows {
            let def = row.figure.def();
            md.push_str(&format!("| {} | {} |", row.scenario.name(), row.label));
            for t in &self.targets {
                let cell = match row.values.get(t) {
                    None => "—".to_owned(),
                    Some(&v) => {
                        let mut parts = vec![format!("{}{}", thousands(v, def.decimals), row.unit)];
                        if let Some(&c) = row.vs_direct.get(t) {
                            parts.push(relation(&def, c, DIRECT));
                        }
                        if let Some(&c) = row.vs_haproxy.get(t) {
                            parts.push(relation(&def, c, HAPROXY));
                        }
                        parts.join("<br>")
                    }
                };
                md.push_str(&format!(" {cell} |"));
            }
            let achieved = row.achieved.as_deref().map(|a| format!(" ({a})")).unwrap_or_default();
            let met = match row.respawn_met {
                Some(true) => format!("yes{achieved}"),
                Some(false) => format!("**no**{achieved}"),
                None => "—".to_owned(),
            };
            md.push_str(&format!(" {} | {met} |\n", row.goal.as_deref().unwrap_or("—")));
        }
        if !self.notes.is_empty() {
            md.push_str("\nNotes:\n");
            for note in &self.notes {
                md.push_str(&format!("- {note}\n"));
            }
        }
        md.push_str("\nDetails per run (best round shown in the table):\n\n");
        md.push_str("| Scenario | Target | Round | Result | Details |\n|---|---|---|---|---|\n");
        for run in &self.runs {
            let result = if run.ok {
                run.figures
                    .iter()
                    .map(|(f, v)| format!("{}{}", thousands(*v, f.def().decimals), f.def().unit))
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                format!("FAILED: {}", run.error.as_deref().unwrap_or("").lines().next().unwrap_or(""))
            };
            let details = run
                .details
                .iter()
                .filter(|(_, v)| !v.is_null() && !v.is_object())
                .map(|(k, v)| match v.as_f64() {
                    Some(f) if f.fract() != 0.0 => format!("{k}={f:.2}"),
                    _ => format!("{k}={v}"),
                })
                .collect::<Vec<_>>()
                .join(", ");
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                run.scenario.name(),
                run.target,
                run.round + 1,
                result.replace('|', "/"),
                details.replace('|', "/")
            ));
        }
        if !self.failures.is_empty() {
            md.push_str("\nFailures:\n");
            for f in &self.failures {
                md.push_str(&format!("- {}\n", f.lines().next().unwrap_or("")));
            }
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0, 0), "0");
        assert_eq!(thousands(999.4, 0), "999");
        assert_eq!(thousands(1234567.8, 0), "1,234,568");
        assert_eq!(thousands(1234.56, 1), "1,234.6");
        assert_eq!(thousands(-4321.0, 0), "−4,321");
    }

    fn run(target: &str, figure: Figure, value: f64) -> Run {
        Run {
            scenario: figure.def().scenario,
            target: target.into(),
            round: 0,
            ok: true,
            error: None,
            figures: [(figure, value)].into(),
            details: Map::new(),
            seconds: 1.0,
        }
    }

    #[test]
    fn verdicts_follow_the_goals() {
        let targets: Vec<String> = [DIRECT, RESPAWN, HAPROXY].map(String::from).to_vec();
        let runs = vec![
            run(DIRECT, Figure::LoginRate, 1000.0),
            run(RESPAWN, Figure::LoginRate, 700.0),
            run(RESPAWN, Figure::LoginRate, 640.0),
            run(HAPROXY, Figure::LoginRate, 650.0),
            run(DIRECT, Figure::LatencyP99, 100.0),
            run(RESPAWN, Figure::LatencyP99, 250.0),
            run(HAPROXY, Figure::LatencyP99, 190.0),
        ];
        let rows = rows(&runs, &targets);
        let login = rows.iter().find(|r| r.figure == Figure::LoginRate).unwrap();
        assert_eq!(login.values[RESPAWN], 700.0, "best round wins");
        assert!((login.vs_haproxy[RESPAWN] - 700.0 / 650.0).abs() < 1e-9);
        assert_eq!(login.respawn_met, Some(true));
        let p99 = rows.iter().find(|r| r.figure == Figure::LatencyP99).unwrap();
        assert_eq!(p99.vs_direct[RESPAWN], 150.0);
        assert_eq!(p99.respawn_met, Some(false));
    }

    #[test]
    fn controller_rows_are_judged_on_respawn_alone() {
        let targets: Vec<String> = [DIRECT, RESPAWN, HAPROXY].map(String::from).to_vec();
        let runs = vec![
            run(RESPAWN, Figure::ControllerReconcile, 23.7),
            run(RESPAWN, Figure::ControllerPeakRss, 300.0),
            run(RESPAWN, Figure::ControllerWakeP99, 36.0),
        ];
        let rows = rows(&runs, &targets);
        let verdict = |f: Figure| rows.iter().find(|r| r.figure == f).and_then(|r| r.respawn_met);
        assert_eq!(verdict(Figure::ControllerReconcile), Some(true));
        assert_eq!(verdict(Figure::ControllerPeakRss), Some(false), "over 256 MiB");
        assert_eq!(verdict(Figure::ControllerWakeP99), Some(true));
        assert!(rows.iter().all(|r| r.vs_direct.is_empty() && r.vs_haproxy.is_empty()));
        assert!(
            rows.iter().any(|r| r.figure == Figure::ControllerBaseline),
            "a row for every figure of a scenario that ran"
        );
    }
}
