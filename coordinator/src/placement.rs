//! Placement: which nodes receive the `k + m` shards of a new segment, and which receive the
//! replacements when some of a segment's shards are rebuilt or moved.
//!
//! Storage nodes are run by volunteer organisations, and whole organisations disappear at
//! once (a budget cut, a data-centre move, a bad upgrade rolled out everywhere). The design
//! therefore asks that losing any `f` organisations together (default two) still leaves `k`
//! shards of every segment. That holds when no organisation holds more than `⌊m / f⌋`
//! shards of a segment: `f` organisations then take at most `f · ⌊m / f⌋ ≤ m` shards away.
//!
//! [`place`] is a pure function — no I/O, no clock, no global randomness — so the same
//! inputs and seed give the same answer in tests and on every coordinator member. When the
//! cluster is too small or too concentrated for the full guarantee it degrades step by step
//! (fewer organisations, then sites, then plain distinct nodes) and says in the returned
//! [`Guarantee`] what it achieved, so the caller can report the weaker state instead of
//! refusing writes.

use std::collections::{BTreeMap, HashSet};

use cairn_proto::identity::NodeId;

/// How many organisations may be lost at once, by default (the design's "any two").
pub const DEFAULT_FAILURE_TOLERANCE: usize = 2;

/// Weight multiplier for vetting nodes, by default: a new node gets a small share of new
/// shards until audits show it keeps what it is given.
pub const DEFAULT_VETTING_WEIGHT: f64 = 0.05;

/// Most a node may weigh in the draw, as a multiple of the median weight of the nodes
/// drawn from, by default: however much space one node claims (or is credited with), it
/// is picked for a segment little more often than a few ordinary nodes together.
pub const DEFAULT_MAX_WEIGHT_OVER_MEDIAN: f64 = 4.0;

/// Bytes any node is trusted with before it has proven anything: new shards are drawn in
/// proportion to free space, but space a node merely claims counts only up to this.
pub const CREDIBLE_FLOOR_BYTES: u64 = 64 << 30;
/// Bytes a vetting node may be given in all until audits have vetted it.
pub const VETTING_QUOTA_BYTES: u64 = 16 << 30;

/// What a node holding `placed` bytes may still be given, by what it has proven rather
/// than what it claims: a vetting node what is left of [`VETTING_QUOTA_BYTES`]; a vetted
/// one as much again as the catalog already places on it (kept, audit after audit), or up
/// to [`CREDIBLE_FLOOR_BYTES`] if that is more. A node claiming 2⁶⁰ bytes free thus weighs
/// what an honest newcomer weighs, and grows only by holding what it is given. The caller
/// takes the smaller of this and the space the node reports free.
pub fn credible_room(vetting: bool, placed: u64) -> u64 {
    if vetting {
        VETTING_QUOTA_BYTES.saturating_sub(placed)
    } else {
        CREDIBLE_FLOOR_BYTES
            .max(placed.saturating_mul(2))
            .saturating_sub(placed)
    }
}

/// A storage node that may receive a shard, as the coordinator currently sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// The node's identity.
    pub node: NodeId,
    /// The organisation that runs the node: the main failure domain. Compared as an exact
    /// string, so nodes that declared the same (even empty) organisation are grouped
    /// together, which can only make the spread stricter, never weaker.
    pub org: String,
    /// The node's site or region. Compared as an exact string across organisations, because
    /// a region outage takes down every organisation's nodes there.
    pub site: String,
    /// Space the node can still take, in bytes.
    pub free_bytes: u64,
    /// Whether the node is new and still being vetted by audits; such nodes get only a
    /// [`PlacementRequest::vetting_weight`] share of shards.
    pub vetting: bool,
}

/// What a new segment needs from placement.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementRequest {
    /// Data shards per segment (at least 1).
    pub k: usize,
    /// Parity shards per segment: how many shards may be lost.
    pub m: usize,
    /// Size of one shard; a node needs at least this much free space to be eligible.
    pub shard_size: u64,
    /// `f`: how many organisations may be lost at once while `k` shards remain.
    pub failure_tolerance: usize,
    /// Weight multiplier for vetting nodes (finite, not negative).
    pub vetting_weight: f64,
    /// Cap on any node's weight, as a multiple of the median weight among the nodes drawn
    /// from (at least 1; infinity for no cap): one node's share of new shards stays
    /// bounded whatever space it reports.
    pub max_weight_over_median: f64,
}

impl PlacementRequest {
    /// A request for a `k + m` segment of `shard_size`-byte shards with the default failure
    /// tolerance and vetting weight.
    pub fn new(k: usize, m: usize, shard_size: u64) -> Self {
        Self {
            k,
            m,
            shard_size,
            failure_tolerance: DEFAULT_FAILURE_TOLERANCE,
            vetting_weight: DEFAULT_VETTING_WEIGHT,
            max_weight_over_median: DEFAULT_MAX_WEIGHT_OVER_MEDIAN,
        }
    }
}

/// The kind of failure domain a placement is spread over, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpreadLevel {
    /// Shards are capped per organisation.
    Org,
    /// Too few organisations: shards are capped per site instead.
    Site,
    /// Too few sites as well: shards are only on distinct nodes.
    Node,
}

impl SpreadLevel {
    /// A short lowercase name (`org`, `site`, `node`), for metric labels and status pages.
    pub fn as_str(self) -> &'static str {
        match self {
            SpreadLevel::Org => "org",
            SpreadLevel::Site => "site",
            SpreadLevel::Node => "node",
        }
    }
}

/// The failure a placement is guaranteed to survive with `k` shards left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guarantee {
    /// The kind of failure domain counted by `tolerated`.
    pub level: SpreadLevel,
    /// How many failure domains of `level` may be lost at once while `k` shards remain
    /// (for [`SpreadLevel::Node`]: how many nodes, which is `m`).
    pub tolerated: usize,
}

impl Guarantee {
    /// Whether this spread is at least as strong as `other`: a stronger kind of domain
    /// first (organisations, then sites, then nodes), then more of them tolerated.
    pub fn at_least(&self, other: &Guarantee) -> bool {
        let rank = |level: SpreadLevel| match level {
            SpreadLevel::Org => 2,
            SpreadLevel::Site => 1,
            SpreadLevel::Node => 0,
        };
        (rank(self.level), self.tolerated) >= (rank(other.level), other.tolerated)
    }
}

impl std::fmt::Display for Guarantee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "any {} {}(s)", self.tolerated, self.level.as_str())
    }
}

/// The nodes chosen for one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// `k + m` distinct nodes; index `i` receives shard `i` (data shards first).
    pub nodes: Vec<NodeId>,
    /// What this placement survives.
    pub guarantee: Guarantee,
}

/// Why no placement could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The request itself is unusable (`k = 0`, a bad vetting weight, `k + m` overflowing).
    #[error("invalid placement request: {0}")]
    InvalidRequest(String),
    /// Fewer distinct nodes with enough free space than shards to place.
    #[error("not enough nodes: {needed} shards to place, {eligible} eligible nodes")]
    NotEnoughNodes {
        /// Shards in the segment (`k + m`).
        needed: usize,
        /// Distinct nodes with at least `shard_size` bytes free.
        eligible: usize,
    },
    /// Moving shards now would leave the segment spread more weakly than `required`
    /// (a move must never weaken a segment; it waits for the cluster to have room).
    #[error("no placement keeps the segment surviving {required}: the best is {best}")]
    WeakerSpread {
        /// The spread the segment must keep (or reach).
        required: Guarantee,
        /// The strongest the candidates allow.
        best: Guarantee,
    },
}

/// Chooses `k + m` distinct nodes for a new segment, spread over organisations as far as the
/// cluster allows, drawing more often from nodes with more free space.
///
/// The spread tried, strongest first: at most `⌊m / t⌋` shards per organisation for
/// `t = f, f − 1, …, 1`; the same per site; finally just distinct nodes. The first one the
/// eligible nodes can fill is used and reported in [`Placement::guarantee`].
///
/// `seed` drives every random choice, so equal inputs and seed give equal placements; the
/// caller passes a fresh random seed per segment.
pub fn place(
    candidates: &[Candidate],
    request: &PlacementRequest,
    seed: u64,
) -> Result<Placement, PlacementError> {
    let needed = checked_width(request)?;
    place_among(candidates, &[], request, needed, seed)
}

/// Chooses `count` more nodes for a segment that keeps shards on the nodes in `kept`: the
/// replacements for shards lost with their nodes (repair) or moved off a node (drain,
/// rebalance). The kept shards count against their domains' caps, so the repaired segment
/// obeys the same spread rule a new one would, as strong as the cluster allows; nodes in
/// `kept` are never chosen again.
///
/// [`Placement::nodes`] holds the `count` new nodes; its guarantee is that of the whole
/// segment (kept and new shards together).
pub fn place_replacements(
    candidates: &[Candidate],
    kept: &[Candidate],
    request: &PlacementRequest,
    count: usize,
    seed: u64,
) -> Result<Placement, PlacementError> {
    let width = checked_width(request)?;
    if kept.len() + count > width {
        return Err(PlacementError::InvalidRequest(format!(
            "{} kept and {count} new shards exceed the {width} of a {}+{} segment",
            kept.len(),
            request.k,
            request.m
        )));
    }
    let keep: HashSet<NodeId> = kept.iter().map(|c| c.node).collect();
    let free: Vec<Candidate> = candidates
        .iter()
        .filter(|c| !keep.contains(&c.node))
        .cloned()
        .collect();
    place_among(&free, kept, request, count, seed)
}

/// [`place_replacements`] for shards that move while their segment is whole (a drain, a
/// rebalance, restoring the spread rule): refused with [`PlacementError::WeakerSpread`]
/// unless the segment afterwards survives at least `required` — typically what
/// [`guarantee_of`] says it survives now, so a move never weakens a segment.
pub fn place_moves(
    candidates: &[Candidate],
    kept: &[Candidate],
    request: &PlacementRequest,
    count: usize,
    seed: u64,
    required: Guarantee,
) -> Result<Placement, PlacementError> {
    let placement = place_replacements(candidates, kept, request, count, seed)?;
    if placement.guarantee.at_least(&required) {
        Ok(placement)
    } else {
        Err(PlacementError::WeakerSpread {
            required,
            best: placement.guarantee,
        })
    }
}

/// The spread the nodes of a placed segment give it: the strongest guarantee whose
/// per-domain cap every organisation (then site) keeps, for `request`'s `k`, `m` and
/// failure tolerance. Nodes listed twice count twice (they would hold two shards).
pub fn guarantee_of(holders: &[Candidate], request: &PlacementRequest) -> Guarantee {
    for level in [SpreadLevel::Org, SpreadLevel::Site] {
        let mut held: BTreeMap<&str, usize> = BTreeMap::new();
        for c in holders {
            let name = match level {
                SpreadLevel::Site => c.site.as_str(),
                SpreadLevel::Org | SpreadLevel::Node => c.org.as_str(),
            };
            *held.entry(name).or_default() += 1;
        }
        let most = held.values().copied().max().unwrap_or(0);
        for tolerated in (1..=request.failure_tolerance.min(request.m)).rev() {
            if most <= request.m / tolerated {
                return Guarantee { level, tolerated };
            }
        }
    }
    Guarantee {
        level: SpreadLevel::Node,
        tolerated: request.m,
    }
}

/// The spread rule a bucket asks of every segment: any `f` organisations may go
/// (`f` = the request's failure tolerance, at most `m`); `None` when it asks none.
pub fn rule(request: &PlacementRequest) -> Option<Guarantee> {
    let tolerated = request.failure_tolerance.min(request.m);
    (tolerated > 0).then_some(Guarantee {
        level: SpreadLevel::Org,
        tolerated,
    })
}

fn place_among(
    candidates: &[Candidate],
    kept: &[Candidate],
    request: &PlacementRequest,
    count: usize,
    seed: u64,
) -> Result<Placement, PlacementError> {
    let pool = eligible(candidates, request.shard_size);
    let spread = plan(&pool, kept, request, count)?;
    let mut rng = SplitMix64(seed);
    let Some(mut nodes) = select(&pool, &spread, request, &mut rng) else {
        // Unreachable while `plan` checks the slot sum (see `select`); an error rather than
        // a panic keeps a bug here from taking the coordinator down.
        return Err(PlacementError::NotEnoughNodes {
            needed: spread.needed,
            eligible: pool.len(),
        });
    };
    // Picks are biased towards big nodes, so the earliest picks would otherwise tend to be
    // the biggest nodes; shuffling keeps data shards (the ones every normal read fetches)
    // from landing systematically on them.
    shuffle(&mut nodes, &mut rng);
    Ok(Placement {
        nodes,
        guarantee: spread.guarantee,
    })
}

/// `k + m`, once the request's own parameters are checked.
fn checked_width(request: &PlacementRequest) -> Result<usize, PlacementError> {
    if request.k == 0 {
        return Err(PlacementError::InvalidRequest(
            "k must be at least 1".to_owned(),
        ));
    }
    // Negative or NaN weights would make the sampling meaningless; infinity would swamp
    // every other node.
    if !(request.vetting_weight.is_finite() && request.vetting_weight >= 0.0) {
        return Err(PlacementError::InvalidRequest(format!(
            "vetting weight must be finite and not negative, not {}",
            request.vetting_weight
        )));
    }
    // NaN or a cap below the median itself would make every weight meaningless.
    if request.max_weight_over_median.is_nan() || request.max_weight_over_median < 1.0 {
        return Err(PlacementError::InvalidRequest(format!(
            "the weight cap must be at least 1, not {}",
            request.max_weight_over_median
        )));
    }
    request.k.checked_add(request.m).ok_or_else(|| {
        PlacementError::InvalidRequest(format!("k + m overflows ({} + {})", request.k, request.m))
    })
}

/// The guarantee [`place`] would give for this request on these candidates, or `None` if it
/// would fail; for status pages and durability metrics.
pub fn best_guarantee(candidates: &[Candidate], request: &PlacementRequest) -> Option<Guarantee> {
    let pool = eligible(candidates, request.shard_size);
    let needed = checked_width(request).ok()?;
    plan(&pool, &[], request, needed)
        .ok()
        .map(|spread| spread.guarantee)
}

/// The distinct candidates with room for a shard.
///
/// A node listed twice counts once, and its first entry wins even if a later one has more
/// space: the caller's list should hold one entry per node, and double-counting a repeat
/// could put two shards on one node.
fn eligible(candidates: &[Candidate], shard_size: u64) -> Vec<&Candidate> {
    let mut seen = HashSet::with_capacity(candidates.len());
    candidates
        .iter()
        .filter(|c| seen.insert(c.node))
        .filter(|c| c.free_bytes >= shard_size)
        .collect()
}

/// The spread chosen for a request: a guarantee and the per-domain cap that yields it.
struct Spread {
    /// `k + m`.
    needed: usize,
    guarantee: Guarantee,
    /// For each pool entry, the index of its failure domain.
    domain_of: Vec<usize>,
    /// Most shards one domain may hold.
    cap: usize,
    /// Shards each domain already holds through kept shards.
    held: Vec<usize>,
}

/// Finds the strongest spread under which the pool can take `needed` more shards, with the
/// shards on `kept` already counted against their domains.
fn plan(
    pool: &[&Candidate],
    kept: &[Candidate],
    request: &PlacementRequest,
    needed: usize,
) -> Result<Spread, PlacementError> {
    if needed > pool.len() {
        return Err(PlacementError::NotEnoughNodes {
            needed,
            eligible: pool.len(),
        });
    }

    for level in [SpreadLevel::Org, SpreadLevel::Site] {
        let (domain_of, sizes, held) = group(pool, kept, level);
        // For t > m the cap ⌊m/t⌋ is 0, so starting at min(f, m) skips only infeasible
        // tolerances, and bounds the loop even for an absurd f.
        for tolerated in (1..=request.failure_tolerance.min(request.m)).rev() {
            let cap = request.m / tolerated;
            // A kept shard over the cap (placed when the cluster was smaller) weakens the
            // segment below this level whatever is chosen now.
            if held.iter().any(|&h| h > cap) {
                continue;
            }
            // Each domain can take what its cap leaves and at most one shard per node.
            let slots = sizes.iter().zip(&held).fold(0usize, |sum, (&size, &h)| {
                sum.saturating_add(size.min(cap - h))
            });
            if slots >= needed {
                return Ok(Spread {
                    needed,
                    guarantee: Guarantee { level, tolerated },
                    domain_of,
                    cap,
                    held,
                });
            }
        }
    }

    // Every node is its own domain with room for one shard: distinct nodes, so any `m` of
    // them may fail. With m = 0 this is the only level there is.
    Ok(Spread {
        needed,
        guarantee: Guarantee {
            level: SpreadLevel::Node,
            tolerated: request.m,
        },
        domain_of: (0..pool.len()).collect(),
        cap: 1,
        held: vec![0; pool.len()],
    })
}

/// Numbers the failure domains of `level` (org or site) in the pool: each entry's domain
/// index, how many pool entries each domain has, and how many kept shards it holds.
fn group(
    pool: &[&Candidate],
    kept: &[Candidate],
    level: SpreadLevel,
) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let name = |c: &Candidate| match level {
        SpreadLevel::Site => c.site.clone(),
        SpreadLevel::Org | SpreadLevel::Node => c.org.clone(),
    };
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut sizes = Vec::new();
    let domain_of = pool
        .iter()
        .map(|c| {
            let next = sizes.len();
            let domain = *index.entry(name(c)).or_insert(next);
            if domain == next {
                sizes.push(0);
            }
            sizes[domain] += 1;
            domain
        })
        .collect();
    // Domains only kept shards are in take no new shard, but their counts still decide
    // whether the segment as a whole keeps the cap.
    let mut held = vec![0; sizes.len()];
    for c in kept {
        let next = held.len();
        let domain = *index.entry(name(c)).or_insert(next);
        if domain == next {
            held.push(0);
            sizes.push(0);
        }
        held[domain] += 1;
    }
    (domain_of, sizes, held)
}

/// Weighted sampling without replacement under the spread's per-domain cap.
///
/// Picking greedily cannot dead-end: a node is available only if its domain is below the
/// cap and has an unchosen node, i.e. the domain has a free slot of `min(cap, size)`; each
/// pick uses exactly one slot, and `plan` made sure there are at least `needed` slots. So
/// `None` (no available node before `needed` picks) never happens.
fn select(
    pool: &[&Candidate],
    spread: &Spread,
    request: &PlacementRequest,
    rng: &mut SplitMix64,
) -> Option<Vec<NodeId>> {
    let mut weights: Vec<f64> = pool
        .iter()
        .map(|c| {
            // u64 → f64 never overflows (it rounds), and the factor is finite and ≥ 0, so
            // every weight is finite and ≥ 0.
            let space = c.free_bytes as f64;
            if c.vetting {
                space * request.vetting_weight
            } else {
                space
            }
        })
        .collect();
    cap_weights(&mut weights, request.max_weight_over_median);
    let mut taken = vec![false; pool.len()];
    let mut used = spread.held.clone();
    let mut chosen = Vec::with_capacity(spread.needed);
    let mut available = Vec::with_capacity(pool.len());
    while chosen.len() < spread.needed {
        available.clear();
        available.extend(
            (0..pool.len()).filter(|&i| !taken[i] && used[spread.domain_of[i]] < spread.cap),
        );
        debug_assert!(
            !available.is_empty(),
            "placement dead-ended after {} of {} picks despite enough slots",
            chosen.len(),
            spread.needed
        );
        let pick = pick_weighted(&available, &weights, rng)?;
        taken[pick] = true;
        used[spread.domain_of[pick]] += 1;
        chosen.push(pool[pick].node);
    }
    Some(chosen)
}

/// Lowers every weight above `ratio` times the median weight to that: the share cap.
/// Weights are finite and not negative, so the median is too.
fn cap_weights(weights: &mut [f64], ratio: f64) {
    if weights.is_empty() || ratio.is_infinite() {
        return;
    }
    let mut sorted = weights.to_vec();
    sorted.sort_by(f64::total_cmp);
    let cap = sorted[sorted.len() / 2] * ratio;
    // A zero median (most nodes full or vetting at weight 0) caps nothing: the nodes with
    // room must still be drawn in proportion to it.
    if cap > 0.0 {
        for weight in weights.iter_mut() {
            *weight = weight.min(cap);
        }
    }
}

/// One index from `available`, with probability proportional to its weight, or uniformly if
/// all of them weigh nothing. `None` only if `available` is empty.
fn pick_weighted(available: &[usize], weights: &[f64], rng: &mut SplitMix64) -> Option<usize> {
    if available.is_empty() {
        return None;
    }
    let total: f64 = available.iter().map(|&i| weights[i]).sum();
    // Zero total (only empty or zero-weight nodes left) still has to place shards; so does a
    // total that is not finite, which cannot happen with finite weights but costs nothing
    // to handle.
    if !(total > 0.0 && total.is_finite()) {
        return Some(available[rng.below(available.len())]);
    }
    let target = rng.next_f64() * total;
    let mut sum = 0.0;
    for &i in available {
        sum += weights[i];
        if target < sum {
            return Some(i);
        }
    }
    // Rounding can leave `target` at or just above the final sum; the last node that weighs
    // anything is the one the draw fell on.
    available.iter().rev().copied().find(|&i| weights[i] > 0.0)
}

/// Fisher–Yates shuffle driven by the placement's generator.
fn shuffle<T>(items: &mut [T], rng: &mut SplitMix64) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i + 1);
        items.swap(i, j);
    }
}

/// SplitMix64: a tiny, well-mixed generator. Placement needs reproducible draws from a seed,
/// not unpredictability (the caller already supplies a random seed per segment), so a few
/// lines beat a dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, from the top 53 bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` for `n ≥ 1` (multiply-shift; the bias of at most n/2⁶⁴ is
    /// irrelevant here).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}
