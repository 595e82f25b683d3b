//! [`Schedule`]: a seeded list of faults to inject into a running cluster, one after the
//! other. The same seed and [`Shape`] always give the same schedule, so a failing run is
//! replayed by its seed.
//!
//! [`Schedule::short`] injects every kind of [`Fault`] once, in a seeded order with seeded
//! targets and durations (a few minutes in all); [`Schedule::long`] runs several such
//! rounds back to back, each shuffled anew.

use std::fmt;
use std::time::Duration;

/// What the schedule may aim at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// Organisation index of each storage node.
    pub node_orgs: Vec<usize>,
    /// Gateways running.
    pub gateways: usize,
    /// How long a gateway's coordinator client waits on one member before it tries
    /// another: a paused leader must stay paused longer.
    pub rpc_attempt_limit: Duration,
}

impl Shape {
    /// Organisations with at least one node.
    pub fn organisations(&self) -> usize {
        self.node_orgs.iter().max().map_or(0, |max| max + 1)
    }
}

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The Raft leader stopped with SIGSTOP, then resumed with SIGCONT.
    PauseLeader {
        /// How long it stays stopped.
        pause: Duration,
    },
    /// The Raft leader killed with SIGKILL while commits stream in, restarted later.
    KillLeader {
        /// How long it stays down.
        down: Duration,
    },
    /// A storage node killed with SIGKILL while shards stream to it, restarted later.
    KillNode {
        /// Index of the node.
        node: usize,
        /// How long it stays down.
        down: Duration,
    },
    /// Every node of two organisations killed at once, restarted later: the placement
    /// rule (tolerating two organisations) says nothing may be lost.
    KillOrganisations {
        /// The two organisations.
        orgs: [usize; 2],
        /// How long they stay down.
        down: Duration,
    },
    /// A gateway killed with SIGKILL in the middle of uploads, restarted on its data dir.
    KillGateway {
        /// Index of the gateway.
        gateway: usize,
        /// How long it stays down.
        down: Duration,
    },
    /// The leader cut off from the other members (both ways) while gateways and nodes
    /// still reach it, then healed.
    PartitionLeader {
        /// How long the partition lasts.
        cut: Duration,
    },
    /// A node restarted with its wall clock moved, later restarted with the true time.
    SkewNodeClock {
        /// Index of the node.
        node: usize,
        /// Seconds added to its clock (may be negative).
        offset_secs: i64,
        /// How long it runs skewed.
        hold: Duration,
    },
}

impl Fault {
    /// A short name for tables and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::PauseLeader { .. } => "pause-leader",
            Fault::KillLeader { .. } => "kill-leader",
            Fault::KillNode { .. } => "kill-node",
            Fault::KillOrganisations { .. } => "kill-two-orgs",
            Fault::KillGateway { .. } => "kill-gateway",
            Fault::PartitionLeader { .. } => "partition-leader",
            Fault::SkewNodeClock { .. } => "skew-node-clock",
        }
    }

    /// How long the fault lasts before it is lifted.
    pub fn duration(&self) -> Duration {
        match self {
            Fault::PauseLeader { pause } => *pause,
            Fault::KillLeader { down }
            | Fault::KillNode { down, .. }
            | Fault::KillOrganisations { down, .. }
            | Fault::KillGateway { down, .. } => *down,
            Fault::PartitionLeader { cut } => *cut,
            Fault::SkewNodeClock { hold, .. } => *hold,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |d: &Duration| d.as_secs_f64();
        match self {
            Fault::PauseLeader { pause } => write!(f, "leader SIGSTOP for {:.1} s", secs(pause)),
            Fault::KillLeader { down } => {
                write!(f, "leader SIGKILL, restarted after {:.1} s", secs(down))
            }
            Fault::KillNode { node, down } => write!(
                f,
                "node {node} SIGKILL mid-PutShard, restarted after {:.1} s",
                secs(down)
            ),
            Fault::KillOrganisations { orgs, down } => write!(
                f,
                "organisations {} and {} SIGKILL, restarted after {:.1} s",
                orgs[0],
                orgs[1],
                secs(down)
            ),
            Fault::KillGateway { gateway, down } => write!(
                f,
                "gateway {gateway} SIGKILL mid-upload, restarted after {:.1} s",
                secs(down)
            ),
            Fault::PartitionLeader { cut } => write!(
                f,
                "leader cut off from the other members for {:.1} s",
                secs(cut)
            ),
            Fault::SkewNodeClock {
                node,
                offset_secs,
                hold,
            } => write!(
                f,
                "node {node} clock {offset_secs:+} s for {:.1} s",
                secs(hold)
            ),
        }
    }
}

/// A fault and the quiet load before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Load without faults before this one is injected.
    pub quiet_before: Duration,
    /// The fault.
    pub fault: Fault,
}

/// Faults in the order they are injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The seed it came from.
    pub seed: u64,
    /// The faults.
    pub steps: Vec<Step>,
}

/// The kinds of fault, one round's worth.
const KINDS: usize = 7;

impl Schedule {
    /// Every kind of fault once, in a seeded order: a few minutes of faults.
    pub fn short(seed: u64, shape: &Shape) -> Schedule {
        Self::rounds(seed, shape, 1)
    }

    /// `rounds` rounds of every kind of fault, each in its own seeded order.
    pub fn long(seed: u64, shape: &Shape, rounds: usize) -> Schedule {
        Self::rounds(seed, shape, rounds.max(1))
    }

    fn rounds(seed: u64, shape: &Shape, rounds: usize) -> Schedule {
        let mut rng = SplitMix(seed);
        let mut steps = Vec::new();
        for _ in 0..rounds {
            let mut kinds: Vec<usize> = (0..KINDS).collect();
            // Fisher-Yates with the seeded generator.
            for i in (1..kinds.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                kinds.swap(i, j);
            }
            for kind in kinds {
                steps.push(Step {
                    quiet_before: rng.between_ms(2_000, 4_000),
                    fault: Self::fault(kind, &mut rng, shape),
                });
            }
        }
        Schedule { seed, steps }
    }

    fn fault(kind: usize, rng: &mut SplitMix, shape: &Shape) -> Fault {
        let nodes = shape.node_orgs.len().max(1) as u64;
        match kind {
            0 => Fault::PauseLeader {
                pause: shape.rpc_attempt_limit + rng.between_ms(2_000, 4_000),
            },
            1 => Fault::KillLeader {
                down: rng.between_ms(3_000, 6_000),
            },
            2 => Fault::KillNode {
                node: rng.below(nodes) as usize,
                down: rng.between_ms(3_000, 8_000),
            },
            3 => {
                let orgs = shape.organisations().max(2) as u64;
                let first = rng.below(orgs) as usize;
                let second = (first + 1 + rng.below(orgs - 1) as usize) % orgs as usize;
                Fault::KillOrganisations {
                    orgs: [first.min(second), first.max(second)],
                    down: rng.between_ms(5_000, 8_000),
                }
            }
            4 => Fault::KillGateway {
                gateway: rng.below(shape.gateways.max(1) as u64) as usize,
                down: rng.between_ms(1_000, 3_000),
            },
            5 => Fault::PartitionLeader {
                cut: rng.between_ms(6_000, 10_000),
            },
            _ => Fault::SkewNodeClock {
                node: rng.below(nodes) as usize,
                // Minutes ahead: past the read orders' life (and for larger draws the
                // put orders' too), so the node refuses orders as expired.
                offset_secs: 60 * (6 + rng.below(7) as i64),
                // Longer than a gateway's or the leader's stale connection to the node's
                // previous process takes to give up (30 s), so the skewed process itself
                // is asked for shards and audits.
                hold: rng.between_ms(40_000, 45_000),
            },
        }
    }

    /// The sum of every quiet period and fault (recovery waits not included).
    pub fn nominal_duration(&self) -> Duration {
        self.steps
            .iter()
            .map(|s| s.quiet_before + s.fault.duration())
            .sum()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {}:", self.seed)?;
        for (i, step) in self.steps.iter().enumerate() {
            writeln!(
                f,
                "  {i:>2}. after {:.1} s quiet: {}",
                step.quiet_before.as_secs_f64(),
                step.fault
            )?;
        }
        Ok(())
    }
}

/// SplitMix64: small, seedable, and every seed (zero included) gives a full-period stream.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` ≥ 1; the modulo bias is irrelevant at these sizes).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn between_ms(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.below(high.saturating_sub(low) + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            node_orgs: vec![0, 0, 1, 1, 2, 2, 3, 3],
            gateways: 2,
            rpc_attempt_limit: Duration::from_secs(10),
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        assert_eq!(Schedule::short(7, &shape()), Schedule::short(7, &shape()));
        assert_ne!(Schedule::short(7, &shape()), Schedule::short(8, &shape()));
    }

    #[test]
    fn the_short_schedule_has_every_fault_once_and_aims_inside_the_cluster() {
        for seed in 0..200 {
            let schedule = Schedule::short(seed, &shape());
            let mut names: Vec<_> = schedule.steps.iter().map(|s| s.fault.name()).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), KINDS, "seed {seed}: {schedule}");
            assert_eq!(schedule.steps.len(), KINDS);
            for step in &schedule.steps {
                match &step.fault {
                    Fault::PauseLeader { pause } => {
                        assert!(*pause > shape().rpc_attempt_limit)
                    }
                    Fault::KillNode { node, .. } | Fault::SkewNodeClock { node, .. } => {
                        assert!(*node < 8)
                    }
                    Fault::KillOrganisations { orgs, .. } => {
                        assert!(orgs[0] < orgs[1] && orgs[1] < 4, "{orgs:?}")
                    }
                    Fault::KillGateway { gateway, .. } => assert!(*gateway < 2),
                    Fault::KillLeader { .. } | Fault::PartitionLeader { .. } => {}
                }
                if let Fault::SkewNodeClock { offset_secs, .. } = step.fault {
                    assert!((360..=720).contains(&offset_secs));
                }
            }
            assert!(schedule.nominal_duration() < Duration::from_secs(180));
        }
    }

    #[test]
    fn the_long_schedule_repeats_every_fault_in_new_orders() {
        let schedule = Schedule::long(3, &shape(), 4);
        assert_eq!(schedule.steps.len(), 4 * KINDS);
        let orders: Vec<Vec<_>> = schedule
            .steps
            .chunks(KINDS)
            .map(|round| round.iter().map(|s| s.fault.name()).collect())
            .collect();
        assert!(orders.windows(2).any(|w| w[0] != w[1]), "{schedule}");
    }
}
