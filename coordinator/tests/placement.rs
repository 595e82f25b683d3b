//! Placement: every successful placement keeps its promised failure-domain spread, the
//! strongest spread the cluster allows is the one chosen, big nodes are favoured and vetting
//! nodes spared, bad requests are typed errors, and replacements for lost shards keep the
//! repaired segment's spread.

use std::collections::{BTreeMap, BTreeSet};

use cairn_coordinator::placement::{
    Candidate, Guarantee, Placement, PlacementError, PlacementRequest, SpreadLevel, best_guarantee,
    guarantee_of, place, place_moves, place_replacements,
};
use cairn_proto::identity::NodeId;
use proptest::prelude::*;
use proptest::sample::Index;

const SHARD: u64 = 1 << 20;

/// A distinct node id per number.
fn node_id(n: usize) -> NodeId {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&(n as u64).to_le_bytes());
    bytes[31] = 0xCA;
    NodeId::from_bytes(bytes)
}

fn candidate(n: usize, org: &str, site: &str, free_bytes: u64) -> Candidate {
    Candidate {
        node: node_id(n),
        org: org.to_owned(),
        site: site.to_owned(),
        free_bytes,
        vetting: false,
    }
}

fn request(k: usize, m: usize, f: usize) -> PlacementRequest {
    PlacementRequest {
        failure_tolerance: f,
        ..PlacementRequest::new(k, m, SHARD)
    }
}

/// `orgs × per_org` nodes with plenty of space; `site(org, i)` names each node's site.
fn cluster(orgs: usize, per_org: usize, site: impl Fn(usize, usize) -> String) -> Vec<Candidate> {
    (0..orgs)
        .flat_map(|o| (0..per_org).map(move |i| (o, i)))
        .map(|(o, i)| {
            candidate(
                o * per_org + i,
                &format!("org{o}"),
                &site(o, i),
                100 * SHARD,
            )
        })
        .collect()
}

/// The failure-domain name of `c` at `level`.
fn domain(c: &Candidate, level: SpreadLevel) -> String {
    match level {
        SpreadLevel::Org => c.org.clone(),
        SpreadLevel::Site => c.site.clone(),
        SpreadLevel::Node => format!("{:?}", c.node),
    }
}

/// The distinct eligible candidates, first entry per node id winning.
fn eligible_pool(candidates: &[Candidate], shard_size: u64) -> BTreeMap<NodeId, Candidate> {
    let mut first = BTreeMap::new();
    for c in candidates {
        first.entry(c.node).or_insert_with(|| c.clone());
    }
    first.retain(|_, c| c.free_bytes >= shard_size);
    first
}

/// Whether a cap of ⌊m/t⌋ per domain of `level` leaves enough slots for k + m shards.
fn feasible(
    pool: &BTreeMap<NodeId, Candidate>,
    level: SpreadLevel,
    k: usize,
    m: usize,
    t: usize,
) -> bool {
    let cap = m / t;
    if cap == 0 {
        return false;
    }
    let mut sizes: BTreeMap<String, usize> = BTreeMap::new();
    for c in pool.values() {
        *sizes.entry(domain(c, level)).or_default() += 1;
    }
    sizes.values().map(|&s| s.min(cap)).sum::<usize>() >= k + m
}

/// Calls `visit` with every `size`-element subset of `items`.
fn combinations(items: &[usize], size: usize, visit: &mut impl FnMut(&[usize])) {
    fn go(items: &[usize], size: usize, picked: &mut Vec<usize>, visit: &mut impl FnMut(&[usize])) {
        if picked.len() == size {
            visit(picked);
            return;
        }
        for (i, &item) in items.iter().enumerate() {
            picked.push(item);
            go(&items[i + 1..], size, picked, visit);
            picked.pop();
        }
    }
    go(items, size, &mut Vec::with_capacity(size), visit);
}

fn binomial(n: usize, r: usize) -> u128 {
    (0..r as u128).fold(1, |acc, i| acc * (n as u128 - i) / (i + 1))
}

/// Checks (a) and (b): distinct eligible nodes, per-domain caps, and that losing any
/// `tolerated` domains of the guarantee's level leaves k shards.
fn check_spread(placement: &Placement, pool: &BTreeMap<NodeId, Candidate>, k: usize, m: usize) {
    assert_eq!(placement.nodes.len(), k + m);
    let distinct: BTreeSet<_> = placement.nodes.iter().collect();
    assert_eq!(
        distinct.len(),
        k + m,
        "a node holds two shards: {placement:?}"
    );
    for node in &placement.nodes {
        assert!(
            pool.contains_key(node),
            "{node:?} is not an eligible candidate"
        );
    }

    let Guarantee { level, tolerated } = placement.guarantee;
    let mut per_domain: BTreeMap<String, usize> = BTreeMap::new();
    for node in &placement.nodes {
        *per_domain.entry(domain(&pool[node], level)).or_default() += 1;
    }
    match level {
        SpreadLevel::Node => assert_eq!(tolerated, m),
        SpreadLevel::Org | SpreadLevel::Site => {
            assert!(
                tolerated >= 1 && m / tolerated >= 1,
                "{:?}",
                placement.guarantee
            );
            let cap = m / tolerated;
            let most = per_domain.values().max().copied().unwrap_or(0);
            assert!(
                most <= cap,
                "{most} shards in one {level:?} domain, cap {cap}"
            );
        }
    }

    let counts: Vec<usize> = per_domain.values().copied().collect();
    let lose = tolerated.min(counts.len());
    let total = k + m;
    // The worst case is losing the largest domains; enumerate everything when affordable
    // anyway, so the check does not rest on that argument.
    let mut largest = counts.clone();
    largest.sort_unstable_by(|a, b| b.cmp(a));
    let lost: usize = largest[..lose].iter().sum();
    assert!(
        total - lost >= k,
        "losing the {lose} largest domains leaves {}",
        total - lost
    );
    if binomial(counts.len(), lose) <= 5_000 {
        combinations(&counts, lose, &mut |gone| {
            let lost: usize = gone.iter().sum();
            assert!(total - lost >= k, "losing {gone:?} leaves {}", total - lost);
        });
    }
}

/// One random cluster of 1..=`max_orgs` organisations with 1–6 nodes each, spread over
/// 1..=`max_sites` sites; about a fifth of the nodes lack space and a fifth are vetting.
fn arb_cluster(max_orgs: usize, max_sites: usize) -> impl Strategy<Value = Vec<Candidate>> {
    let free = prop_oneof![
        1 => 0..SHARD,
        4 => SHARD..=20 * SHARD,
    ];
    let nodes = (1..=max_sites).prop_flat_map(move |sites| {
        prop::collection::vec(
            prop::collection::vec((0..sites, free.clone(), prop::bool::weighted(0.2)), 1..=6),
            1..=max_orgs,
        )
    });
    (nodes, prop::option::weighted(0.2, any::<Index>())).prop_map(|(orgs, duplicate)| {
        let mut candidates = Vec::new();
        for (o, nodes) in orgs.into_iter().enumerate() {
            for (site, free_bytes, vetting) in nodes {
                candidates.push(Candidate {
                    vetting,
                    ..candidate(
                        candidates.len(),
                        &format!("org{o}"),
                        &format!("site{site}"),
                        free_bytes,
                    )
                });
            }
        }
        // A repeated entry (a caller bug) must count once; its first entry wins.
        if let Some(index) = duplicate {
            let mut repeat = index.get(&candidates).clone();
            repeat.org = "repeat".to_owned();
            repeat.free_bytes = repeat.free_bytes.wrapping_add(SHARD) % (3 * SHARD);
            candidates.push(repeat);
        }
        candidates
    })
}

/// Properties (a)–(d) for one random case, plus: nothing stronger than the returned
/// guarantee was feasible.
fn check_case(
    candidates: &[Candidate],
    k: usize,
    m: usize,
    f: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let req = request(k, m, f);
    let pool = eligible_pool(candidates, SHARD);
    match place(candidates, &req, seed) {
        Err(PlacementError::NotEnoughNodes { needed, eligible }) => {
            prop_assert_eq!(needed, k + m);
            prop_assert_eq!(eligible, pool.len());
            prop_assert!(eligible < needed);
            prop_assert_eq!(best_guarantee(candidates, &req), None);
        }
        Err(e) => prop_assert!(false, "unexpected error {e}"),
        Ok(placement) => {
            prop_assert!(pool.len() >= k + m);
            check_spread(&placement, &pool, k, m);
            let got = placement.guarantee;
            // (c) what status reports is what placement did.
            prop_assert_eq!(best_guarantee(candidates, &req), Some(got));
            // (d) the full guarantee whenever the organisations allow it.
            if feasible(&pool, SpreadLevel::Org, k, m, f) {
                prop_assert_eq!(
                    got,
                    Guarantee {
                        level: SpreadLevel::Org,
                        tolerated: f
                    }
                );
            }
            // And never weaker than needed: nothing stronger was feasible.
            let stronger: Vec<(SpreadLevel, usize)> = match got.level {
                SpreadLevel::Org => (got.tolerated + 1..=f)
                    .map(|t| (SpreadLevel::Org, t))
                    .collect(),
                SpreadLevel::Site => (1..=f)
                    .map(|t| (SpreadLevel::Org, t))
                    .chain((got.tolerated + 1..=f).map(|t| (SpreadLevel::Site, t)))
                    .collect(),
                SpreadLevel::Node => (1..=f)
                    .flat_map(|t| [(SpreadLevel::Org, t), (SpreadLevel::Site, t)])
                    .collect(),
            };
            for (level, t) in stronger {
                prop_assert!(
                    !feasible(&pool, level, k, m, t),
                    "{level:?} with t = {t} was feasible but {got:?} was chosen"
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The cluster shape of the brief: 1–12 orgs, 1–4 sites.
    #[test]
    fn placement_keeps_its_guarantee(
        candidates in arb_cluster(12, 4),
        k in 1usize..=10,
        m in 0usize..=8,
        f in 1usize..=3,
        seed in any::<u64>(),
    ) {
        check_case(&candidates, k, m, f, seed)?;
    }

    /// Few orgs but many sites and smaller codes, so the site-level fallback is exercised
    /// too (with at most four sites it is rarely the outcome).
    #[test]
    fn placement_keeps_its_guarantee_over_sites(
        candidates in arb_cluster(4, 12),
        k in 1usize..=6,
        m in 0usize..=6,
        f in 1usize..=3,
        seed in any::<u64>(),
    ) {
        check_case(&candidates, k, m, f, seed)?;
    }
}

#[test]
fn two_orgs_in_two_sites_fall_back_to_distinct_nodes() {
    // k=4, m=2, f=2: Org t=2 caps at ⌊2/2⌋=1 per org → 2 slots < 6; Org t=1 caps at 2 →
    // 4 slots < 6; sites mirror the orgs, so the same holds per site; only distinct nodes
    // remain, which survive any m = 2 node losses.
    let nodes = cluster(2, 8, |o, _| format!("site{o}"));
    let req = request(4, 2, 2);
    let expected = Guarantee {
        level: SpreadLevel::Node,
        tolerated: 2,
    };
    assert_eq!(best_guarantee(&nodes, &req), Some(expected));
    let placement = place(&nodes, &req, 7).unwrap();
    assert_eq!(placement.guarantee, expected);
    check_spread(&placement, &eligible_pool(&nodes, SHARD), 4, 2);
}

#[test]
fn two_orgs_over_many_sites_spread_by_site() {
    // Same orgs as above (no org-level spread possible), but each org runs its nodes in
    // four sites of its own: 8 sites, so Site t=2 (1 shard per site, 8 slots ≥ 6) holds.
    let nodes = cluster(2, 8, |o, i| format!("site{o}-{}", i % 4));
    let req = request(4, 2, 2);
    let expected = Guarantee {
        level: SpreadLevel::Site,
        tolerated: 2,
    };
    assert_eq!(best_guarantee(&nodes, &req), Some(expected));
    for seed in 0..20 {
        let placement = place(&nodes, &req, seed).unwrap();
        assert_eq!(placement.guarantee, expected);
        check_spread(&placement, &eligible_pool(&nodes, SHARD), 4, 2);
    }
}

#[test]
fn three_orgs_tolerate_one() {
    // Org t=2: 1 per org → 3 slots < 6; Org t=1: 2 per org → 6 slots = 6. Each org then
    // holds exactly two shards.
    let nodes = cluster(3, 8, |o, _| format!("site{o}"));
    let req = request(4, 2, 2);
    let placement = place(&nodes, &req, 11).unwrap();
    assert_eq!(
        placement.guarantee,
        Guarantee {
            level: SpreadLevel::Org,
            tolerated: 1
        }
    );
    let pool = eligible_pool(&nodes, SHARD);
    let mut per_org: BTreeMap<&str, usize> = BTreeMap::new();
    for node in &placement.nodes {
        *per_org.entry(pool[node].org.as_str()).or_default() += 1;
    }
    assert_eq!(per_org.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
}

#[test]
fn enough_orgs_give_the_full_guarantee() {
    // Production shape: k=10, m=6, f=2 → at most 3 per org; 6 orgs × 3 = 18 slots ≥ 16.
    let nodes = cluster(6, 4, |o, _| format!("site{o}"));
    let req = request(10, 6, 2);
    let placement = place(&nodes, &req, 3).unwrap();
    assert_eq!(
        placement.guarantee,
        Guarantee {
            level: SpreadLevel::Org,
            tolerated: 2
        }
    );
    check_spread(&placement, &eligible_pool(&nodes, SHARD), 10, 6);
}

#[test]
fn no_parity_means_node_level_with_nothing_tolerated() {
    let nodes = cluster(5, 2, |o, _| format!("site{o}"));
    let placement = place(&nodes, &request(3, 0, 2), 1).unwrap();
    assert_eq!(
        placement.guarantee,
        Guarantee {
            level: SpreadLevel::Node,
            tolerated: 0
        }
    );
    assert_eq!(placement.nodes.len(), 3);
}

/// How often each node is chosen over `runs` seeds.
fn pick_counts(nodes: &[Candidate], req: &PlacementRequest, runs: u64) -> BTreeMap<NodeId, u64> {
    let mut counts = BTreeMap::new();
    for seed in 0..runs {
        for node in place(nodes, req, seed).unwrap().nodes {
            *counts.entry(node).or_default() += 1;
        }
    }
    counts
}

#[test]
fn bigger_nodes_are_chosen_more_often() {
    // One node with 10× the space of each of nine others, one shard per segment: expected
    // share 10/19 against 1/19 each.
    let mut nodes: Vec<Candidate> = (0..10)
        .map(|i| candidate(i, &format!("org{i}"), "site", 10 * SHARD))
        .collect();
    nodes[0].free_bytes = 100 * SHARD;
    let uncapped = |k, m, f| PlacementRequest {
        max_weight_over_median: f64::INFINITY,
        ..request(k, m, f)
    };
    let counts = pick_counts(&nodes, &uncapped(1, 0, 2), 4000);
    let big = counts.get(&node_id(0)).copied().unwrap_or(0);
    let small_mean = (4000 - big) as f64 / 9.0;
    assert!(
        big as f64 > 5.0 * small_mean,
        "big chosen {big} times, small {small_mean} on average"
    );

    // With a spread constraint in force (k=2, m=1, one node per org), still favoured.
    let counts = pick_counts(&nodes, &uncapped(2, 1, 1), 2000);
    let big = counts.get(&node_id(0)).copied().unwrap_or(0);
    let small_mean = (3 * 2000 - big) as f64 / 9.0;
    assert!(
        big as f64 > 2.5 * small_mean,
        "big chosen {big} times, small {small_mean} on average"
    );
}

/// A node claiming all the space there is weighs at most four times the median node (the
/// default cap): among ten, it gets about 4/13 of single-shard segments, not nearly all.
#[test]
fn one_node_s_share_of_new_shards_is_capped_whatever_it_claims() {
    let mut nodes: Vec<Candidate> = (0..10)
        .map(|i| candidate(i, &format!("org{i}"), "site", 10 * SHARD))
        .collect();
    nodes[0].free_bytes = u64::MAX;
    let counts = pick_counts(&nodes, &request(1, 0, 2), 4000);
    let big = counts.get(&node_id(0)).copied().unwrap_or(0);
    assert!(
        (1000..=1500).contains(&big),
        "the node claiming everything got {big} of 4000"
    );
    // A cap below the median itself is refused.
    let req = PlacementRequest {
        max_weight_over_median: 0.5,
        ..request(1, 0, 2)
    };
    assert!(matches!(
        place(&nodes, &req, 0),
        Err(PlacementError::InvalidRequest(_))
    ));
}

#[test]
fn vetting_nodes_get_a_small_share() {
    // Ten equal nodes, five of them vetting: a vetting node weighs 0.05 of a vetted one.
    let nodes: Vec<Candidate> = (0..10)
        .map(|i| Candidate {
            vetting: i >= 5,
            ..candidate(i, &format!("org{i}"), "site", 10 * SHARD)
        })
        .collect();
    let counts = pick_counts(&nodes, &request(2, 1, 1), 2000);
    let vetted: u64 = (0..5)
        .map(|i| counts.get(&node_id(i)).copied().unwrap_or(0))
        .sum();
    let vetting: u64 = (5..10)
        .map(|i| counts.get(&node_id(i)).copied().unwrap_or(0))
        .sum();
    assert_eq!(vetted + vetting, 3 * 2000);
    assert!(
        vetting * 10 < vetted,
        "vetting nodes got {vetting} shards, vetted ones {vetted}"
    );
    assert!(vetting > 0, "vetting nodes must still get some shards");

    // Needed anyway when nothing else is left: three vetting nodes for three shards.
    let placement = place(&nodes[5..8], &request(2, 1, 1), 0).unwrap();
    assert_eq!(placement.nodes.len(), 3);
}

#[test]
fn data_shards_are_not_pinned_to_the_biggest_node() {
    // One huge node among equals is almost always picked first; the shuffle must still move
    // it into parity positions about m/(k+m) of the time.
    let mut nodes: Vec<Candidate> = (0..6)
        .map(|i| candidate(i, &format!("org{i}"), "site", SHARD))
        .collect();
    nodes[0].free_bytes = 1000 * SHARD;
    let mut positions = [0u32; 6];
    for seed in 0..600 {
        let placement = place(&nodes, &request(4, 2, 2), seed).unwrap();
        let at = placement
            .nodes
            .iter()
            .position(|&n| n == node_id(0))
            .unwrap();
        positions[at] += 1;
    }
    let parity = positions[4] + positions[5];
    assert!(
        parity > 100,
        "huge node in a parity slot only {parity} of 600 times: {positions:?}"
    );
    assert!(positions.iter().all(|&p| p > 40), "{positions:?}");
}

#[test]
fn same_seed_same_placement() {
    let nodes = cluster(8, 4, |o, i| format!("site{}", (o + i) % 3));
    let req = request(10, 6, 2);
    let placements: Vec<Placement> = (0..20)
        .map(|seed| place(&nodes, &req, seed).unwrap())
        .collect();
    for (seed, placement) in (0..20).zip(&placements) {
        assert_eq!(&place(&nodes, &req, seed).unwrap(), placement);
    }
    let distinct: BTreeSet<_> = placements.iter().map(|p| p.nodes.clone()).collect();
    assert!(
        distinct.len() > 1,
        "different seeds should give different placements"
    );
}

#[test]
fn too_few_eligible_nodes() {
    let mut nodes = cluster(5, 1, |o, _| format!("site{o}"));
    nodes[0].free_bytes = SHARD - 1;
    nodes[1].free_bytes = 0;
    let req = request(2, 2, 2);
    assert_eq!(
        place(&nodes, &req, 0),
        Err(PlacementError::NotEnoughNodes {
            needed: 4,
            eligible: 3
        })
    );
    assert_eq!(best_guarantee(&nodes, &req), None);

    // A node listed three times is still one node.
    let same = vec![nodes[2].clone(), nodes[2].clone(), nodes[2].clone()];
    assert_eq!(
        place(&same, &request(2, 0, 2), 0),
        Err(PlacementError::NotEnoughNodes {
            needed: 2,
            eligible: 1
        })
    );

    assert_eq!(
        place(&[], &request(1, 0, 2), 0),
        Err(PlacementError::NotEnoughNodes {
            needed: 1,
            eligible: 0
        })
    );
    // A huge m is just "not enough nodes".
    assert_eq!(
        place(&nodes, &request(1, usize::MAX - 1, 2), 0),
        Err(PlacementError::NotEnoughNodes {
            needed: usize::MAX,
            eligible: 3
        })
    );
}

#[test]
fn invalid_requests_are_errors() {
    let nodes = cluster(4, 2, |o, _| format!("site{o}"));
    assert!(matches!(
        place(&nodes, &request(0, 2, 2), 0),
        Err(PlacementError::InvalidRequest(_))
    ));
    assert!(matches!(
        place(&[], &request(0, 0, 2), 0),
        Err(PlacementError::InvalidRequest(_))
    ));
    assert!(matches!(
        place(&nodes, &request(2, usize::MAX, 2), 0),
        Err(PlacementError::InvalidRequest(_))
    ));
    for weight in [f64::NAN, -1.0, f64::INFINITY] {
        let req = PlacementRequest {
            vetting_weight: weight,
            ..request(2, 1, 2)
        };
        assert!(matches!(
            place(&nodes, &req, 0),
            Err(PlacementError::InvalidRequest(_))
        ));
    }
    assert_eq!(best_guarantee(&nodes, &request(0, 2, 2)), None);
}

#[test]
fn odd_inputs_do_not_panic() {
    // No free space at all and no minimum: all weights are 0, so picks are uniform.
    let empty: Vec<Candidate> = (0..6).map(|i| candidate(i, "org", "site", 0)).collect();
    let req = PlacementRequest {
        shard_size: 0,
        ..request(2, 2, 2)
    };
    let placement = place(&empty, &req, 9).unwrap();
    assert_eq!(
        placement.guarantee,
        Guarantee {
            level: SpreadLevel::Node,
            tolerated: 2
        }
    );
    assert_eq!(placement.nodes.iter().collect::<BTreeSet<_>>().len(), 4);

    // A vetting weight of 0 still lets vetting nodes fill what others cannot.
    let vetting: Vec<Candidate> = (0..4)
        .map(|i| Candidate {
            vetting: true,
            ..candidate(i, &format!("o{i}"), "s", SHARD)
        })
        .collect();
    let req = PlacementRequest {
        vetting_weight: 0.0,
        ..request(2, 2, 2)
    };
    assert_eq!(place(&vetting, &req, 1).unwrap().nodes.len(), 4);

    // Free space near u64::MAX on many nodes.
    let huge: Vec<Candidate> = (0..8)
        .map(|i| candidate(i, &format!("o{i}"), "s", u64::MAX - i as u64))
        .collect();
    assert!(place(&huge, &request(4, 4, 2), 2).is_ok());

    // An absurd failure tolerance ends quickly at the best tolerance m allows.
    let nodes = cluster(6, 2, |o, _| format!("site{o}"));
    let placement = place(&nodes, &request(2, 4, usize::MAX), 5).unwrap();
    assert_eq!(
        placement.guarantee,
        Guarantee {
            level: SpreadLevel::Org,
            tolerated: 4
        }
    );

    // f = 0 asks for no domain spread: distinct nodes only.
    let placement = place(&nodes, &request(2, 4, 0), 5).unwrap();
    assert_eq!(
        placement.guarantee,
        Guarantee {
            level: SpreadLevel::Node,
            tolerated: 4
        }
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Repair: a placed segment loses some of its nodes; the replacements go to nodes that
    /// hold none of its shards, and the repaired segment (kept plus new shards) keeps the
    /// spread its guarantee states.
    #[test]
    fn replacements_keep_the_segment_spread(
        candidates in arb_cluster(12, 4),
        k in 1usize..=8,
        m in 1usize..=6,
        f in 1usize..=3,
        lost_mask in any::<u16>(),
        seed in any::<u64>(),
    ) {
        let req = request(k, m, f);
        let Ok(original) = place(&candidates, &req, seed) else {
            return Ok(());
        };
        let pool = eligible_pool(&candidates, SHARD);
        let lost: Vec<NodeId> = original
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| lost_mask & (1 << (i % 16)) != 0)
            .map(|(_, n)| *n)
            .collect();
        let kept: Vec<Candidate> = original
            .nodes
            .iter()
            .filter(|n| !lost.contains(n))
            .map(|n| pool[n].clone())
            .collect();
        // The lost nodes are gone from the cluster.
        let alive: Vec<Candidate> = candidates
            .iter()
            .filter(|c| !lost.contains(&c.node))
            .cloned()
            .collect();
        match place_replacements(&alive, &kept, &req, lost.len(), seed ^ 1) {
            Err(PlacementError::NotEnoughNodes { needed, eligible }) => {
                prop_assert_eq!(needed, lost.len());
                prop_assert!(eligible < needed);
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
            Ok(repaired) => {
                prop_assert_eq!(repaired.nodes.len(), lost.len());
                for node in &repaired.nodes {
                    prop_assert!(!lost.contains(node), "a lost node was chosen");
                    prop_assert!(
                        !kept.iter().any(|c| c.node == *node),
                        "a node already holding a shard was chosen"
                    );
                }
                let whole = Placement {
                    nodes: kept.iter().map(|c| c.node).chain(repaired.nodes.clone()).collect(),
                    guarantee: repaired.guarantee,
                };
                check_spread(&whole, &pool, k, m);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A move (drain, rebalance) of one shard of a placed segment either keeps the spread
    /// the segment had — measured on the nodes that hold it afterwards — or is refused.
    #[test]
    fn moves_never_weaken_a_segment(
        candidates in arb_cluster(12, 4),
        k in 1usize..=8,
        m in 1usize..=6,
        f in 1usize..=3,
        moved in any::<Index>(),
        seed in any::<u64>(),
    ) {
        let req = request(k, m, f);
        let Ok(original) = place(&candidates, &req, seed) else {
            return Ok(());
        };
        let pool = eligible_pool(&candidates, SHARD);
        let holders: Vec<Candidate> = original.nodes.iter().map(|n| pool[n].clone()).collect();
        let before = guarantee_of(&holders, &req);
        prop_assert!(before.at_least(&original.guarantee), "{before} < {}", original.guarantee);
        let leaving = moved.index(holders.len());
        let kept: Vec<Candidate> = holders
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != leaving)
            .map(|(_, c)| c.clone())
            .collect();
        let others: Vec<Candidate> = candidates
            .iter()
            .filter(|c| c.node != holders[leaving].node)
            .cloned()
            .collect();
        match place_moves(&others, &kept, &req, 1, seed ^ 7, before) {
            Ok(placement) => {
                let after: Vec<Candidate> = kept
                    .iter()
                    .cloned()
                    .chain(placement.nodes.iter().map(|n| pool[n].clone()))
                    .collect();
                let now = guarantee_of(&after, &req);
                prop_assert!(now.at_least(&before), "{now} < {before}");
            }
            Err(PlacementError::WeakerSpread { required, best }) => {
                prop_assert_eq!(required, before);
                prop_assert!(!best.at_least(&before));
            }
            Err(PlacementError::NotEnoughNodes { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }
}

/// A 2 + 2 segment surviving any two organisations (one shard each in a, b, c, d) cannot
/// move its shard in d to a second node of a: that is refused, not done; with a node of a
/// fifth organisation it moves there.
#[test]
fn a_move_that_would_crowd_an_organisation_is_refused() {
    let req = request(2, 2, 2);
    let holders: Vec<Candidate> = ["a", "b", "c", "d"]
        .iter()
        .enumerate()
        .map(|(i, org)| candidate(i, org, org, 100 * SHARD))
        .collect();
    let before = guarantee_of(&holders, &req);
    assert_eq!(
        before,
        Guarantee {
            level: SpreadLevel::Org,
            tolerated: 2
        }
    );
    let kept = &holders[..3];
    let only_a = vec![candidate(10, "a", "a", 100 * SHARD)];
    assert_eq!(
        place_moves(&only_a, kept, &req, 1, 1, before),
        Err(PlacementError::WeakerSpread {
            required: before,
            best: Guarantee {
                level: SpreadLevel::Org,
                tolerated: 1
            }
        })
    );
    // The same move as a repair (no requirement) is made, weaker.
    assert!(place_replacements(&only_a, kept, &req, 1, 1).is_ok());
    let with_e = vec![
        candidate(10, "a", "a", 100 * SHARD),
        candidate(11, "e", "e", SHARD),
    ];
    let placement = place_moves(&with_e, kept, &req, 1, 1, before).unwrap();
    assert_eq!(placement.nodes, vec![node_id(11)]);
    assert_eq!(placement.guarantee, before);
}

/// Space counts only as far as a node has earned it: a vetting node stops receiving
/// shards at its quota; a vetted one may take as much again as it holds, at least the floor.
#[test]
fn claimed_space_counts_only_as_far_as_it_is_earned() {
    use cairn_coordinator::placement::{CREDIBLE_FLOOR_BYTES, VETTING_QUOTA_BYTES, credible_room};
    assert_eq!(credible_room(true, 0), VETTING_QUOTA_BYTES);
    assert_eq!(credible_room(true, VETTING_QUOTA_BYTES - 5), 5);
    assert_eq!(credible_room(true, u64::MAX), 0);
    assert_eq!(credible_room(false, 0), CREDIBLE_FLOOR_BYTES);
    assert_eq!(credible_room(false, 1 << 40), 1 << 40);
    assert_eq!(credible_room(false, u64::MAX), 0);
    // A vetting node at its quota has no room for a shard: never placed on while others
    // can take it.
    let nodes: Vec<Candidate> = (0..4)
        .map(|i| Candidate {
            vetting: i == 0,
            free_bytes: if i == 0 {
                credible_room(true, VETTING_QUOTA_BYTES)
            } else {
                10 * SHARD
            },
            ..candidate(i, &format!("o{i}"), "s", 0)
        })
        .collect();
    for seed in 0..50 {
        let placement = place(&nodes, &request(2, 1, 1), seed).unwrap();
        assert!(!placement.nodes.contains(&node_id(0)));
    }
}
