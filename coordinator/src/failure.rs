//! Failure detection: the leader turns node silence into lifecycle changes.
//!
//! Heartbeats reach only the leader and stay in its memory ([`Liveness`]); what they lead to
//! is committed as [`Command::SetNodeState`], so every member agrees on who is suspect or
//! lost. While this member leads, [`run`] looks at every node once per tick:
//!
//! - `Vetting` or `Active`, silent longer than `suspect_after` → `Suspect` (shards still
//!   count, nothing is repaired yet);
//! - `Suspect`, silent longer than `lost_after` → `Lost` (its shards count as gone);
//! - `Suspect` and heard from again → `Active` if it had been vetted, else `Vetting`.
//!
//! `Lost`, `Draining`, `Gone` and `Disqualified` nodes are never moved by heartbeats or
//! silence: a lost node's shards are being rebuilt elsewhere, so taking it back is an
//! operator's decision, and the other states belong to drains and audits.
//!
//! "Silent" is measured from the later of the node's last heartbeat to *this* member and the
//! moment this member became leader. A new leader has heard nothing yet (heartbeats went to
//! its predecessor), so without that floor it would suspect every node at once; with it,
//! every node gets a full `suspect_after` to find the new leader.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::order::unix_now_ms;
use openraft::Raft;
use openraft::error::{ClientWriteError, RaftError};

use crate::catalog::model::{NodeRecord, NodeState};
use crate::catalog::{Catalog, Command, CommandResult};
use crate::config::CoordinatorConfig;
use crate::liveness::Liveness;
use crate::raft::types::TypeConfig;

/// The longest a failure check waits for a Raft round (a linearizable read or a commit):
/// without a quorum neither may ever finish, and the loop must keep watching leadership.
const RAFT_LIMIT: Duration = Duration::from_secs(10);

/// How long silence may last before a node changes state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Silence after which a vetting or active node becomes suspect.
    pub suspect_after: Duration,
    /// Silence after which a suspect node becomes lost.
    pub lost_after: Duration,
}

impl Settings {
    /// Time between checks: a second, or a quarter of `suspect_after` if that is shorter, so
    /// a node is suspected at most a quarter late.
    pub fn tick(&self) -> Duration {
        (self.suspect_after / 4)
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(10))
    }
}

impl From<&CoordinatorConfig> for Settings {
    fn from(config: &CoordinatorConfig) -> Self {
        Settings {
            suspect_after: Duration::from_secs(config.suspect_after_secs),
            lost_after: Duration::from_secs(config.lost_after_secs),
        }
    }
}

/// What this member has heard from one node, as of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hearing {
    /// Time since the node's last heartbeat reached this member, if one ever did.
    pub since_heartbeat: Option<Duration>,
    /// Time since this member became leader.
    pub leading_for: Duration,
}

impl Hearing {
    /// How long the node counts as silent: since its last heartbeat here, but never longer
    /// than this member has led, since before that its heartbeats went elsewhere.
    pub fn silence(&self) -> Duration {
        match self.since_heartbeat {
            Some(ago) => ago.min(self.leading_for),
            None => self.leading_for,
        }
    }

    /// Whether a heartbeat arrived while this member leads. Older ones (from an earlier
    /// term of this member) say nothing about whether the node found the current leader.
    pub fn heard_while_leading(&self) -> bool {
        self.since_heartbeat
            .is_some_and(|ago| ago < self.leading_for)
    }
}

/// The state a node in `state` (ever `vetted` or not) should move to, if any.
///
/// A suspect node counts as back when a heartbeat reached this leader and its silence is
/// under `suspect_after` again: the grace period a new leader grants is not itself a sign
/// of life.
pub fn decide(
    state: NodeState,
    vetted: bool,
    hearing: &Hearing,
    settings: &Settings,
) -> Option<NodeState> {
    let silent = hearing.silence();
    if hearing.heard_while_leading()
        && silent <= settings.suspect_after
        && let Some(next) = state.after_heartbeat(vetted)
    {
        return Some(next);
    }
    state.after_silence(silent, settings.suspect_after, settings.lost_after)
}

/// Watches node liveness while this member leads, committing the state changes [`decide`]
/// calls for; idle on followers. Returns when Raft shuts down.
pub async fn run(
    raft: Raft<TypeConfig>,
    catalog: Catalog,
    liveness: Arc<Liveness>,
    settings: Settings,
) {
    let mut metrics = raft.metrics();
    let mut ticker = tokio::time::interval(settings.tick());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The term this member leads and when it noticed: the floor of every node's silence.
    let mut leading: Option<(u64, Instant)> = None;
    loop {
        let check = tokio::select! {
            _ = ticker.tick() => true,
            // Leadership is tracked between ticks too, so its start is noticed when it
            // happens, not up to a tick later (which would shorten the grace period).
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
                false
            }
        };
        let now_leading = leader_term(&mut metrics);
        leading = match (leading, now_leading) {
            (Some((term, since)), Some(now)) if term == now => Some((term, since)),
            (_, Some(term)) => {
                tracing::info!(
                    term,
                    grace_secs = settings.suspect_after.as_secs(),
                    "leading: failure detection starts, every node gets a full grace period"
                );
                Some((term, Instant::now()))
            }
            (Some(_), None) => {
                tracing::info!("no longer leading: failure detection stops");
                None
            }
            (None, None) => None,
        };
        if let (true, Some((_, since))) = (check, leading)
            && let Err(err) = check_nodes(&raft, &catalog, &liveness, &settings, since).await
        {
            tracing::warn!(%err, "failure check incomplete");
        }
    }
}

/// This member's term if it is the leader. The metrics borrow ends here: holding it across
/// an await would stall Raft, which publishes to the same channel.
fn leader_term(
    metrics: &mut tokio::sync::watch::Receiver<
        openraft::RaftMetrics<u64, crate::raft::types::Member>,
    >,
) -> Option<u64> {
    let m = metrics.borrow_and_update();
    (m.current_leader == Some(m.id)).then_some(m.current_term)
}

/// One pass over every node.
async fn check_nodes(
    raft: &Raft<TypeConfig>,
    catalog: &Catalog,
    liveness: &Liveness,
    settings: &Settings,
    leading_since: Instant,
) -> Result<(), String> {
    // A new leader may not have applied everything its predecessors committed; deciding from
    // that stale catalog could, say, suspect a node already marked lost.
    tokio::time::timeout(RAFT_LIMIT, raft.ensure_linearizable())
        .await
        .map_err(|_| "no quorum confirmed leadership in time".to_string())?
        .map_err(|err| err.to_string())?;
    let nodes = catalog.nodes().map_err(|err| err.to_string())?;
    let leading_for = leading_since.elapsed();
    for node in nodes {
        let hearing = Hearing {
            since_heartbeat: liveness.last(&node.id).map(|(ago, _)| ago),
            leading_for,
        };
        if let Some(to) = decide(node.state, node.vetted, &hearing, settings) {
            commit(raft, &node, to, hearing.silence()).await?;
        }
    }
    Ok(())
}

/// Commits one transition and logs it.
async fn commit(
    raft: &Raft<TypeConfig>,
    node: &NodeRecord,
    to: NodeState,
    silent: Duration,
) -> Result<(), String> {
    let command = Command::ChangeNodeState {
        node: node.id,
        from: node.state,
        to,
        now_ms: unix_now_ms(),
    };
    let written = tokio::time::timeout(RAFT_LIMIT, raft.client_write(command))
        .await
        .map_err(|_| format!("setting node {} {} timed out", node.id, to.as_str()))?;
    match written {
        Ok(response) => {
            if let CommandResult::Refused(err) = response.data {
                // The node was removed or changed state since the catalog was read (an
                // operator's decision wins): nothing left to decide this round.
                tracing::debug!(node = %node.id, %err, "state change refused");
                return Ok(());
            }
        }
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
            return Err("leadership lost during the check".into());
        }
        Err(err) => return Err(err.to_string()),
    }
    let silent_secs = silent.as_millis() as f64 / 1_000.0;
    let (node, from, to) = (node.id, node.state.as_str(), to.as_str());
    if matches!(to, "suspect" | "lost") {
        tracing::warn!(%node, from, to, silent_secs, "node state changed by silence");
    } else {
        tracing::info!(%node, from, to, silent_secs, "node heard from again");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn settings() -> Settings {
        Settings {
            suspect_after: secs(30),
            lost_after: secs(600),
        }
    }

    #[test]
    fn silence_suspects_then_loses_one_step_at_a_time() {
        let (s, l) = (secs(30), secs(600));
        for state in [NodeState::Vetting, NodeState::Active] {
            assert_eq!(state.after_silence(secs(30), s, l), None, "{state:?}");
            assert_eq!(
                state.after_silence(secs(31), s, l),
                Some(NodeState::Suspect)
            );
            // Even far past lost_after, a node is suspected before it is lost.
            assert_eq!(
                state.after_silence(secs(10_000), s, l),
                Some(NodeState::Suspect)
            );
        }
        assert_eq!(NodeState::Suspect.after_silence(secs(600), s, l), None);
        assert_eq!(
            NodeState::Suspect.after_silence(secs(601), s, l),
            Some(NodeState::Lost)
        );
    }

    #[test]
    fn only_suspects_come_back_and_to_what_they_had_earned() {
        assert_eq!(
            NodeState::Suspect.after_heartbeat(true),
            Some(NodeState::Active)
        );
        assert_eq!(
            NodeState::Suspect.after_heartbeat(false),
            Some(NodeState::Vetting)
        );
        for state in NodeState::ALL
            .into_iter()
            .filter(|s| *s != NodeState::Suspect)
        {
            for vetted in [false, true] {
                assert_eq!(state.after_heartbeat(vetted), None, "{state:?}");
            }
        }
    }

    #[test]
    fn operator_states_ignore_silence_and_heartbeats() {
        let quiet = Hearing {
            since_heartbeat: None,
            leading_for: secs(100_000),
        };
        let chatty = Hearing {
            since_heartbeat: Some(secs(0)),
            leading_for: secs(100_000),
        };
        for state in [
            NodeState::Lost,
            NodeState::Draining,
            NodeState::Gone,
            NodeState::Disqualified,
        ] {
            for vetted in [false, true] {
                assert_eq!(decide(state, vetted, &quiet, &settings()), None);
                assert_eq!(decide(state, vetted, &chatty, &settings()), None);
            }
        }
    }

    #[test]
    fn a_new_leader_grants_a_full_grace_period() {
        // Nothing heard yet, or only long ago in an earlier term of this member.
        for since_heartbeat in [None, Some(secs(5_000))] {
            let at = |leading_for| Hearing {
                since_heartbeat,
                leading_for,
            };
            assert_eq!(at(secs(29)).silence(), secs(29));
            assert_eq!(
                decide(NodeState::Active, true, &at(secs(30)), &settings()),
                None
            );
            assert_eq!(
                decide(NodeState::Active, true, &at(secs(31)), &settings()),
                Some(NodeState::Suspect)
            );
            // A suspect node is not lost just because the old leader suspected it: the new
            // leader waits lost_after of its own.
            assert_eq!(
                decide(NodeState::Suspect, true, &at(secs(599)), &settings()),
                None
            );
            assert_eq!(
                decide(NodeState::Suspect, true, &at(secs(601)), &settings()),
                Some(NodeState::Lost)
            );
        }
    }

    #[test]
    fn the_grace_period_is_not_a_sign_of_life() {
        // A suspect node not heard from since this member took over stays suspect, even
        // though its measured silence is short.
        let fresh_leader = Hearing {
            since_heartbeat: None,
            leading_for: secs(1),
        };
        assert_eq!(
            decide(NodeState::Suspect, true, &fresh_leader, &settings()),
            None
        );
        let old_news = Hearing {
            since_heartbeat: Some(secs(2)),
            leading_for: secs(1),
        };
        assert!(!old_news.heard_while_leading());
        assert_eq!(
            decide(NodeState::Suspect, false, &old_news, &settings()),
            None
        );
    }

    #[test]
    fn a_suspect_heard_from_again_returns() {
        let heard = Hearing {
            since_heartbeat: Some(Duration::from_millis(200)),
            leading_for: secs(3_600),
        };
        assert_eq!(
            decide(NodeState::Suspect, true, &heard, &settings()),
            Some(NodeState::Active)
        );
        assert_eq!(
            decide(NodeState::Suspect, false, &heard, &settings()),
            Some(NodeState::Vetting)
        );
        // Heard this term, but not recently enough to clear the suspicion.
        let stale = Hearing {
            since_heartbeat: Some(secs(45)),
            leading_for: secs(3_600),
        };
        assert_eq!(decide(NodeState::Suspect, true, &stale, &settings()), None);
        // Live nodes stay as they are.
        for state in [NodeState::Vetting, NodeState::Active] {
            assert_eq!(decide(state, false, &heard, &settings()), None);
        }
    }

    #[test]
    fn ticks_are_at_most_a_second_and_a_quarter_of_the_grace() {
        assert_eq!(settings().tick(), secs(1));
        let short = Settings {
            suspect_after: secs(2),
            lost_after: secs(5),
        };
        assert_eq!(short.tick(), Duration::from_millis(500));
    }
}
