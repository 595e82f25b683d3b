//! The stated bound of the audit judgement (ARCHITECTURE.md, "Reputation"), checked on the
//! exact integer rule the catalog applies: a seeded simulation of nodes that fail each
//! audit with probability p, counting the audits until the default policy disqualifies
//! them. The 99th percentile must stay within the bound for p = 100 %, 20 % and 5 %, and
//! nodes that fail rarely must mostly keep their place.

use cairn_coordinator::audit::{MAX_CHALLENGES_PER_ROUND, challenges_per_round};
use cairn_coordinator::catalog::model::{Reputation, ReputationPolicy};

/// SplitMix64: reproducible draws without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `p_ppm` millionths.
    fn chance(&mut self, p_ppm: u64) -> bool {
        self.next() % 1_000_000 < p_ppm
    }
}

/// Audits until a node failing each with probability `p_ppm` is disqualified, per run
/// (`None`: still in after `limit`).
fn audits_to_disqualify(p_ppm: u64, runs: usize, limit: u32, seed: u64) -> Vec<Option<u32>> {
    let policy = ReputationPolicy::default();
    let mut rng = Rng(seed);
    (0..runs)
        .map(|_| {
            let mut reputation = Reputation::default();
            for n in 1..=limit {
                reputation.judge(!rng.chance(p_ppm), policy.lambda_ppm);
                if reputation.score_ppm < policy.disqualify_below_ppm {
                    return Some(n);
                }
            }
            None
        })
        .collect()
}

/// The 99th percentile of `runs`, counting a node never caught as caught never.
fn p99(mut runs: Vec<Option<u32>>) -> u32 {
    runs.sort_by_key(|n| n.unwrap_or(u32::MAX));
    runs[runs.len() * 99 / 100].unwrap_or(u32::MAX)
}

#[test]
fn a_node_that_loses_everything_is_out_after_three_audits() {
    assert_eq!(
        ReputationPolicy::default().failures_to_disqualify(),
        Some(3)
    );
    assert!(
        audits_to_disqualify(1_000_000, 100, 10, 1)
            .iter()
            .all(|n| *n == Some(3))
    );
}

#[test]
fn a_node_failing_a_fifth_of_its_audits_is_out_within_40_with_99_percent() {
    let caught = p99(audits_to_disqualify(200_000, 20_000, 1_000, 2));
    assert!(caught <= 40, "99th percentile {caught} audits");
}

#[test]
fn a_node_failing_one_audit_in_twenty_is_out_within_230_with_99_percent() {
    let caught = p99(audits_to_disqualify(50_000, 20_000, 5_000, 3));
    assert!(caught <= 230, "99th percentile {caught} audits");
}

/// The other side of the line: a node failing one audit in 10 000 stays in over 100 000
/// audits (two months at one a minute) in at least 99 % of runs, and one failing one in
/// 100 000 in every run.
#[test]
fn rare_failures_rarely_disqualify() {
    let out = |p_ppm, seed| {
        audits_to_disqualify(p_ppm, 400, 100_000, seed)
            .iter()
            .filter(|n| n.is_some())
            .count()
    };
    let rare = out(100, 4);
    assert!(rare <= 4, "{rare} of 400 disqualified");
    assert_eq!(out(10, 5), 0);
}

/// Audits grow with holdings, so the rounds a loss takes to find shrink with them, up to
/// the cap.
#[test]
fn challenges_grow_with_what_a_node_holds_up_to_the_cap() {
    assert_eq!(challenges_per_round(0), 1);
    assert_eq!(challenges_per_round(1), 1);
    assert_eq!(challenges_per_round(1_000), 1);
    assert_eq!(challenges_per_round(1_001), 2);
    assert_eq!(challenges_per_round(15_500), 16);
    assert_eq!(challenges_per_round(u64::MAX), MAX_CHALLENGES_PER_ROUND);
}
