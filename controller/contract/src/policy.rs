//! The scaling policy: a pure function from (spec, observed, memory, now) to
//! desired replicas and the reason. No IO, no clock: the caller passes `now`
//! and keeps the returned `Memory` (in the cluster's status on Kubernetes, in
//! the runtime locally), so a restart loses nothing.
//!
//! Every scaling decision is made here, the overrides included: a hibernate
//! request in force scales to zero, a drained replica whose players outstay
//! the drain timeout is removed, and a server that is still starting is never
//! stopped for idleness (its idle clock starts when it is ready). The local
//! runtime and the Kubernetes controller only observe and apply.
//!
//! Longer than most files here: one function and its property tests (the
//! tests are over half of it), kept together on purpose.

use std::{fmt, time::Duration};

/// Timestamps are durations since an epoch the caller chooses.
pub type Time = Duration;

pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
pub const DEFAULT_MIN_ONLINE: Duration = Duration::from_secs(120);
pub const DEFAULT_STABILIZATION: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    /// 0 lets the server sleep.
    pub min_replicas: u32,
    /// 1 for a single server; more makes it a fleet.
    pub max_replicas: u32,
    pub players_per_replica: u32,
    /// Spare replicas a fleet keeps above what its players need.
    pub buffer: u32,
    pub idle_timeout: Duration,
    /// Time a woken server stays up even with nobody on it.
    pub min_online: Duration,
    /// A fleet scales down only after its target stayed lower this long.
    pub stabilization: Duration,
    /// A replica being drained (its players holding a scale-down) is removed
    /// after this long even with players on it. `Duration::MAX`: never.
    pub drain_timeout: Duration,
}

impl Default for PolicySpec {
    fn default() -> Self {
        Self {
            min_replicas: 0,
            max_replicas: 1,
            players_per_replica: 100,
            buffer: 0,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            min_online: DEFAULT_MIN_ONLINE,
            stabilization: DEFAULT_STABILIZATION,
            drain_timeout: Duration::MAX,
        }
    }
}

/// What the controller sees right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Replicas currently asked for.
    pub replicas: u32,
    /// Players on each replica, by ordinal (missing ordinals have none).
    pub players: Vec<u32>,
    /// A login arrived for this server since the last decision.
    pub wake: bool,
    /// An operator pinned it up.
    pub pinned: bool,
    pub backup_running: bool,
    /// A stop request is in force (the API's `stop`; newer than any wake):
    /// scale to zero, players or not, unless a backup runs.
    pub hibernate: bool,
    /// Replicas are asked for but none is ready yet: the server is starting,
    /// and its idle clock has not started.
    pub starting: bool,
}

impl Observed {
    pub fn total_players(&self) -> u64 {
        self.players.iter().map(|&p| u64::from(p)).sum()
    }

    /// Replicas that cannot be removed: up to the highest ordinal with players.
    pub fn occupied_floor(&self) -> u32 {
        self.players.iter().rposition(|&p| p > 0).map_or(0, |i| i as u32 + 1)
    }
}

/// What the policy remembers between decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub last_wake: Option<Time>,
    /// Last time anyone was on (or the server came up).
    pub last_active: Option<Time>,
    /// Since when a fleet's target has been below its replicas.
    pub lower_since: Option<Time>,
    /// Since when a replica has been drained (the drain timeout counts from here).
    pub draining_since: Option<Time>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Wake,
    Pinned,
    MinReplicas,
    BackupRunning,
    PlayersOnline {
        players: u64,
    },
    /// Idle, but not yet for long enough (or too soon after a wake).
    IdleWaiting {
        idle: Duration,
        until_sleep: Duration,
    },
    Idle {
        idle: Duration,
    },
    FleetUp {
        players: u64,
        target: u32,
    },
    FleetDown {
        players: u64,
        target: u32,
    },
    Stabilizing {
        target: u32,
        remaining: Duration,
    },
    /// A lower target would remove replicas that still have players.
    HoldingPlayers {
        floor: u32,
    },
    /// The drained replica's players had their time (the drain timeout).
    DrainTimeout {
        ordinal: u32,
    },
    /// A stop was requested (the API's `stop`): down now, players or not.
    HibernateRequested,
    /// Up but not ready yet: the idle clock starts when it is.
    Starting,
    Asleep,
    Steady,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Wake => write!(f, "a player asked to join: waking"),
            Reason::Pinned => write!(f, "pinned up by an operator"),
            Reason::MinReplicas => write!(f, "kept at the minimum replicas"),
            Reason::BackupRunning => write!(f, "a backup is running"),
            Reason::PlayersOnline { players } => write!(f, "{players} player(s) online"),
            Reason::IdleWaiting { idle, until_sleep } => {
                write!(f, "idle for {}s, sleeping in {}s", idle.as_secs(), until_sleep.as_secs())
            }
            Reason::Idle { idle } => write!(f, "nobody played for {}s: sleeping", idle.as_secs()),
            Reason::FleetUp { players, target } => write!(f, "{players} player(s) need {target} replica(s)"),
            Reason::FleetDown { players, target } => {
                write!(f, "{players} player(s) need only {target} replica(s) after the stabilisation window")
            }
            Reason::Stabilizing { target, remaining } => {
                write!(f, "target {target} is lower; waiting {}s more before scaling down", remaining.as_secs())
            }
            Reason::HoldingPlayers { floor } => write!(f, "replicas up to {floor} still have players"),
            Reason::DrainTimeout { ordinal } => {
                write!(f, "replica {ordinal} drained past the drain timeout: removing it")
            }
            Reason::HibernateRequested => write!(f, "hibernate requested"),
            Reason::Starting => write!(f, "starting: the idle clock waits until it is ready"),
            Reason::Asleep => write!(f, "asleep"),
            Reason::Steady => write!(f, "steady"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub replicas: u32,
    pub reason: Reason,
    pub memory: Memory,
    /// The ordinal kept from new players while a scale-down waits for it
    /// (its players, or the stabilisation window), if any.
    pub draining: Option<u32>,
}

fn since(now: Time, then: Option<Time>) -> Duration {
    then.map_or(Duration::MAX, |t| now.saturating_sub(t))
}

/// Decides the replicas for one server or fleet.
pub fn decide(spec: &PolicySpec, obs: &Observed, memory: Memory, now: Time) -> Decision {
    let starting = obs.starting && obs.replicas > 0;
    let mut memory = memory;
    if starting {
        // The idle clock starts when the server is ready, never while it
        // starts: a start longer than the idle timeout or min_online must
        // not be stopped half-way (its held players were told to come back).
        memory.last_active = Some(now);
    }
    let mut d = scale(spec, obs, memory, now);
    if obs.hibernate && !obs.backup_running {
        d.replicas = 0;
        d.reason = Reason::HibernateRequested;
        d.memory.lower_since = None;
        d.memory.draining_since = None;
        return d;
    }
    if starting && matches!(d.reason, Reason::IdleWaiting { .. }) {
        d.reason = Reason::Starting;
    }
    // A scale-down held by players (or the window) drains the top replica.
    let draining = matches!(d.reason, Reason::Stabilizing { .. } | Reason::HoldingPlayers { .. }) && d.replicas > 0;
    let draining_since = draining.then(|| memory.draining_since.unwrap_or(now));
    if let (Reason::HoldingPlayers { .. }, Some(since)) = (&d.reason, draining_since)
        && now.saturating_sub(since) >= spec.drain_timeout
        && obs.replicas > 0
    {
        d.replicas = obs.replicas - 1;
        d.reason = Reason::DrainTimeout { ordinal: obs.replicas - 1 };
    }
    d.draining = draining.then(|| d.replicas.max(obs.replicas).saturating_sub(1));
    d.memory.draining_since = draining_since.filter(|_| d.replicas >= obs.replicas);
    d
}

/// The scale players, the minimum, pins and backups ask for.
fn scale(spec: &PolicySpec, obs: &Observed, memory: Memory, now: Time) -> Decision {
    let mut mem = memory;
    let players = obs.total_players();
    let floor = obs.occupied_floor();
    let max = spec.max_replicas.max(1);
    if players > 0 || obs.wake {
        // A login is activity even before it shows up as a player.
        mem.last_active = Some(now);
    }
    if obs.wake && obs.replicas == 0 {
        mem.last_wake = Some(now);
        mem.last_active = Some(now);
        mem.lower_since = None;
        let target = fleet_target(spec, players).max(1).max(spec.min_replicas).min(max);
        return Decision { replicas: target, reason: Reason::Wake, memory: mem, draining: None };
    }
    if obs.replicas > 0 && mem.last_active.is_none() {
        // Up without a record (e.g. started by hand): count from now.
        mem.last_active = Some(now);
    }

    // What players (and the minimum) ask for.
    let idle = since(now, mem.last_active);
    let woke_ago = since(now, mem.last_wake);
    let may_sleep =
        players == 0 && idle >= spec.idle_timeout && woke_ago >= spec.min_online && !(obs.starting && obs.replicas > 0);
    let mut target = if (obs.replicas == 0 && players == 0) || may_sleep {
        0
    } else if max == 1 {
        1
    } else {
        // Up and not idle long enough: at least one replica stays.
        fleet_target(spec, players).clamp(1, max)
    };
    target = target.max(spec.min_replicas.min(max));

    // Things that keep replicas up whatever the target says.
    let keep = |replicas: u32, reason: Reason, mem: Memory| Decision { replicas, reason, memory: mem, draining: None };
    if obs.pinned && target < obs.replicas.clamp(1, max) {
        return keep(obs.replicas.clamp(1, max).max(floor), Reason::Pinned, mem);
    }
    if obs.backup_running && target < obs.replicas.min(max) {
        return keep(obs.replicas.min(max).max(floor), Reason::BackupRunning, mem);
    }

    if target > obs.replicas {
        mem.lower_since = None;
        let reason = if obs.replicas == 0 && spec.min_replicas > 0 && players == 0 {
            Reason::MinReplicas
        } else {
            Reason::FleetUp { players, target }
        };
        return keep(target, reason, mem);
    }
    if target == obs.replicas {
        mem.lower_since = None;
        let reason = match (obs.replicas, players) {
            (0, _) => Reason::Asleep,
            (_, 0) if spec.min_replicas >= obs.replicas => Reason::MinReplicas,
            (_, 0) => Reason::IdleWaiting {
                idle: idle.min(Duration::from_secs(u64::MAX / 2)),
                until_sleep: spec.idle_timeout.saturating_sub(idle).max(spec.min_online.saturating_sub(woke_ago)),
            },
            (_, p) => Reason::PlayersOnline { players: p },
        };
        return keep(obs.replicas, reason, mem);
    }

    // target < replicas: never remove a replica with players on it.
    if floor > target && floor >= obs.replicas {
        mem.lower_since = None;
        return keep(obs.replicas, Reason::HoldingPlayers { floor }, mem);
    }
    if target == 0 {
        // Sleeping is already gated by the idle timeout and min_online.
        mem.lower_since = None;
        return keep(floor, if floor > 0 { Reason::HoldingPlayers { floor } } else { Reason::Idle { idle } }, mem);
    }
    if max == 1 {
        // More replicas than a single server may have: back to one at once.
        mem.lower_since = None;
        return keep(target.max(floor), Reason::Steady, mem);
    }
    let lower_since = *mem.lower_since.get_or_insert(now);
    let waited = now.saturating_sub(lower_since);
    if waited < spec.stabilization {
        // Above max (the spec shrank) is corrected at once; the rest waits.
        let hold = obs.replicas.min(max).max(floor);
        return keep(hold, Reason::Stabilizing { target, remaining: spec.stabilization - waited }, mem);
    }
    mem.lower_since = None;
    let replicas = target.max(floor);
    let reason =
        if replicas > target { Reason::HoldingPlayers { floor } } else { Reason::FleetDown { players, target } };
    keep(replicas, reason, mem)
}

/// ceil(players / per replica) + buffer.
fn fleet_target(spec: &PolicySpec, players: u64) -> u32 {
    let per = u64::from(spec.players_per_replica.max(1));
    let need = players.div_ceil(per) + u64::from(spec.buffer);
    u32::try_from(need).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn single() -> PolicySpec {
        PolicySpec { idle_timeout: S(600), min_online: S(120), ..PolicySpec::default() }
    }

    #[test]
    fn wake_scales_zero_to_one_at_once() {
        let d = decide(&single(), &Observed { wake: true, ..Default::default() }, Memory::default(), S(1000));
        assert_eq!((d.replicas, d.reason.clone()), (1, Reason::Wake));
        assert_eq!(d.memory.last_wake, Some(S(1000)));
    }

    #[test]
    fn status_alone_never_wakes() {
        let d = decide(&single(), &Observed::default(), Memory::default(), S(1000));
        assert_eq!((d.replicas, d.reason), (0, Reason::Asleep));
    }

    #[test]
    fn idle_timeout_and_min_online() {
        let spec = PolicySpec { idle_timeout: S(60), min_online: S(300), ..single() };
        let up = Observed { replicas: 1, players: vec![0], ..Default::default() };
        let mem = Memory { last_wake: Some(S(0)), last_active: Some(S(0)), ..Memory::default() };
        // Idle past the timeout but inside min_online: stays.
        let d = decide(&spec, &up, mem, S(100));
        assert_eq!(d.replicas, 1);
        assert!(matches!(d.reason, Reason::IdleWaiting { .. }), "{:?}", d.reason);
        let d = decide(&spec, &up, mem, S(300));
        assert_eq!((d.replicas, d.reason), (0, Reason::Idle { idle: S(300) }));
        // Players reset the idle clock.
        let busy = Observed { players: vec![2], ..up.clone() };
        let d = decide(&spec, &busy, mem, S(400));
        assert_eq!(d.replicas, 1);
        let d = decide(&spec, &up, d.memory, S(430));
        assert_eq!(d.replicas, 1, "idle only 30 s");
    }

    #[test]
    fn pin_and_backup_keep_it_up() {
        let up = Observed { replicas: 1, players: vec![0], ..Default::default() };
        let old = Memory { last_wake: Some(S(0)), last_active: Some(S(0)), ..Memory::default() };
        let d = decide(&single(), &Observed { pinned: true, ..up.clone() }, old, S(10_000));
        assert_eq!((d.replicas, d.reason), (1, Reason::Pinned));
        let d = decide(&single(), &Observed { backup_running: true, ..up.clone() }, old, S(10_000));
        assert_eq!((d.replicas, d.reason), (1, Reason::BackupRunning));
        let d = decide(&single(), &up, old, S(10_000));
        assert_eq!(d.replicas, 0);
    }

    #[test]
    fn fleet_up_at_once_down_after_window_never_over_players() {
        let spec = PolicySpec {
            min_replicas: 1,
            max_replicas: 10,
            players_per_replica: 10,
            buffer: 1,
            stabilization: S(300),
            ..single()
        };
        let obs = |replicas, players: Vec<u32>| Observed { replicas, players, ..Default::default() };
        let d = decide(&spec, &obs(1, vec![35]), Memory::default(), S(0));
        assert_eq!(d.replicas, 5); // ceil(35/10) + 1
        // Players leave: the target drops to 2, but only after the window.
        let d = decide(&spec, &obs(5, vec![5, 0, 0, 0, 0]), d.memory, S(10));
        assert!(matches!(d.reason, Reason::Stabilizing { target: 2, .. }), "{:?}", d.reason);
        assert_eq!(d.replicas, 5);
        let d2 = decide(&spec, &obs(5, vec![5, 0, 0, 0, 0]), d.memory, S(320));
        assert_eq!(d2.replicas, 2);
        // Someone still on ordinal 3: only down to 4.
        let d3 = decide(&spec, &obs(5, vec![5, 0, 0, 1, 0]), d.memory, S(320));
        assert_eq!(d3.replicas, 4);
        assert_eq!(d3.reason, Reason::HoldingPlayers { floor: 4 });
    }

    fn arb_spec() -> impl Strategy<Value = PolicySpec> {
        (0u32..3, 1u32..8, 1u32..20, 0u32..3, 1u64..1000, 0u64..1000, 0u64..1000).prop_map(
            |(min, max, ppr, buffer, idle, online, stab)| PolicySpec {
                min_replicas: min.min(max),
                max_replicas: max,
                players_per_replica: ppr,
                buffer,
                idle_timeout: S(idle),
                min_online: S(online),
                stabilization: S(stab),
                drain_timeout: Duration::MAX,
            },
        )
    }

    fn arb_observed() -> impl Strategy<Value = Observed> {
        (0u32..8, proptest::collection::vec(0u32..30, 0..8), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(replicas, mut players, wake, pinned, backup, starting)| {
                players.truncate(replicas as usize);
                Observed { replicas, players, wake, pinned, backup_running: backup, starting, hibernate: false }
            })
    }

    fn arb_memory() -> impl Strategy<Value = Memory> {
        let t = proptest::option::of((0u64..5000).prop_map(S));
        (t.clone(), t.clone(), t.clone(), t).prop_map(|(a, b, c, d)| Memory {
            last_wake: a,
            last_active: b,
            lower_since: c,
            draining_since: d,
        })
    }

    proptest! {
        #[test]
        fn never_removes_replicas_with_players(spec in arb_spec(), obs in arb_observed(), mem in arb_memory(), now in 5000u64..20000) {
            let d = decide(&spec, &obs, mem, S(now));
            prop_assert!(d.replicas >= obs.occupied_floor().min(obs.replicas), "{d:?}");
        }

        #[test]
        fn always_wakes_on_a_wake(spec in arb_spec(), obs in arb_observed(), mem in arb_memory(), now in 5000u64..20000) {
            let obs = Observed { wake: true, ..obs };
            let d = decide(&spec, &obs, mem, S(now));
            prop_assert!(d.replicas >= 1, "{d:?}");
        }

        #[test]
        fn respects_min_and_max(spec in arb_spec(), obs in arb_observed(), mem in arb_memory(), now in 5000u64..20000) {
            let d = decide(&spec, &obs, mem, S(now));
            prop_assert!(d.replicas >= spec.min_replicas.min(spec.max_replicas));
            prop_assert!(d.replicas <= spec.max_replicas.max(obs.occupied_floor()).max(1), "{d:?}");
        }

        /// A server that is starting is never stopped for idleness, however
        /// long the start takes against its idle timeout and min_online.
        #[test]
        fn never_sleeps_while_starting(spec in arb_spec(), obs in arb_observed(), mem in arb_memory(), now in 5000u64..20000) {
            let obs = Observed { starting: true, replicas: obs.replicas.max(1), pinned: false, hibernate: false, ..obs };
            let d = decide(&spec, &obs, mem, S(now));
            prop_assert!(d.replicas >= 1, "{d:?}");
        }

        /// The idle clock starts at ready: a start of any length is followed by
        /// a full idle timeout up before the server sleeps.
        #[test]
        fn the_idle_clock_starts_when_ready(idle in 1u64..600, online in 0u64..600, start in 1u64..2000) {
            let spec = PolicySpec { idle_timeout: S(idle), min_online: S(online), ..PolicySpec::default() };
            let woke = decide(&spec, &Observed { wake: true, ..Default::default() }, Memory::default(), S(1000));
            prop_assert_eq!(woke.replicas, 1);
            let mut mem = woke.memory;
            // Starting, observed every second until ready.
            for t in 1001..=1000 + start {
                let d = decide(&spec, &Observed { replicas: 1, players: vec![0], starting: true, ..Default::default() }, mem, S(t));
                prop_assert_eq!(d.replicas, 1, "stopped {}s into a start", t - 1000);
                mem = d.memory;
            }
            let ready_at = 1000 + start;
            let up = Observed { replicas: 1, players: vec![0], ..Default::default() };
            let before = decide(&spec, &up, mem, S(ready_at + idle - 1));
            prop_assert_eq!(before.replicas, 1, "slept {}s after ready, idle timeout {}s", idle - 1, idle);
            let after = decide(&spec, &up, mem, S(ready_at + idle.max(online)));
            prop_assert_eq!(after.replicas, 0, "{:?}", after);
        }

        /// A stop request in force wins over players, pins and the minimum —
        /// not over a running backup.
        #[test]
        fn a_hibernate_request_scales_to_zero(spec in arb_spec(), obs in arb_observed(), mem in arb_memory(), now in 5000u64..20000) {
            let obs = Observed { hibernate: true, ..obs };
            let d = decide(&spec, &obs, mem, S(now));
            if obs.backup_running {
                prop_assert!(d.reason != Reason::HibernateRequested);
            } else {
                prop_assert_eq!((d.replicas, d.reason, d.draining), (0, Reason::HibernateRequested, None));
            }
        }

        /// Past the drain timeout exactly the drained (highest) replica goes,
        /// players or not; before it, none with players does.
        #[test]
        fn the_drain_timeout_removes_one_replica(players_on_top in 1u32..20, replicas in 2u32..6, drain in 1u64..1000, waited in 0u64..2000) {
            let spec = PolicySpec { max_replicas: 10, players_per_replica: 100, drain_timeout: S(drain), stabilization: S(0), ..PolicySpec::default() };
            let mut players = vec![0; replicas as usize];
            players[replicas as usize - 1] = players_on_top;
            let obs = Observed { replicas, players, ..Default::default() };
            let mem = Memory { last_active: Some(S(10_000)), draining_since: Some(S(10_000)), ..Memory::default() };
            let d = decide(&spec, &obs, mem, S(10_000 + waited));
            if waited >= drain {
                prop_assert_eq!((d.replicas, d.reason.clone()), (replicas - 1, Reason::DrainTimeout { ordinal: replicas - 1 }));
                prop_assert_eq!(d.memory.draining_since, None);
            } else {
                prop_assert_eq!(d.replicas, replicas, "{:?}", d);
                prop_assert_eq!(d.draining, Some(replicas - 1));
                prop_assert_eq!(d.memory.draining_since, Some(S(10_000)));
            }
        }

        /// With steady players, a fleet never scales down inside the window
        /// after its target first dropped, and never goes up and down within it.
        #[test]
        fn fleets_do_not_flap(spec in arb_spec(), players in proptest::collection::vec(0u32..60, 1..30), step in 1u64..120) {
            let spec = PolicySpec { max_replicas: spec.max_replicas.max(2), ..spec };
            let mut replicas = spec.min_replicas.max(1);
            let mut mem = Memory::default();
            let mut last_up: Option<u64> = None;
            for (i, p) in players.iter().enumerate() {
                let now = 10_000 + i as u64 * step;
                let obs = if replicas == 0 {
                    Observed { wake: *p > 0, ..Default::default() }
                } else {
                    let mut per = vec![0; replicas as usize];
                    per[0] = *p;
                    Observed { replicas, players: per, ..Default::default() }
                };
                let d = decide(&spec, &obs, mem, S(now));
                if d.replicas > replicas { last_up = Some(now); }
                if d.replicas < replicas && d.replicas > 0
                    && let Some(up) = last_up {
                        prop_assert!(now - up >= spec.stabilization.as_secs(), "down {}s after an up", now - up);
                    }
                replicas = d.replicas;
                mem = d.memory;
            }
        }
    }
}
