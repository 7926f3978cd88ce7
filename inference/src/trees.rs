//! Small gradient-boosted trees on the shared features: the default scorer.
//!
//! Logistic loss, second-order (Newton) leaf values, histogram split finding on per-feature
//! quantile bins, depth-limited trees grown level by level. Training is deterministic (no
//! sampling, no threads), so the same rows give the same model byte for byte. Scoring walks
//! each tree from the root: a few hundred comparisons, about a microsecond on one core.

use std::sync::OnceLock;

use ndarray::{Array2, ArrayView1};
use serde::{Deserialize, Serialize};

use crate::stats::{logit, sigmoid};

/// How the ensemble is grown.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoostingOptions {
    /// Trees.
    pub trees: usize,
    /// Depth of each tree (leaves = 2^depth at most).
    pub depth: usize,
    /// Shrinkage of each tree's values.
    pub learning_rate: f64,
    /// L2 penalty on leaf values.
    pub l2: f64,
    /// Least hessian (about p(1-p) per row) on each side of a split.
    pub min_child_hessian: f64,
    /// Most bins per feature.
    pub bins: usize,
}

impl Default for BoostingOptions {
    fn default() -> Self {
        Self {
            trees: 150,
            depth: 4,
            learning_rate: 0.1,
            l2: 1.0,
            min_child_hessian: 20.0,
            bins: 64,
        }
    }
}

/// One node of a tree, in a flat array: a split (`feature`, `threshold`, children) or a leaf.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Node {
    /// Go left when `values[feature] <= threshold`.
    Split {
        /// Feature index.
        feature: u16,
        /// Threshold (a bin's upper edge).
        threshold: f64,
        /// Index of the left child.
        left: u32,
        /// Index of the right child.
        right: u32,
    },
    /// A leaf's contribution to the log-odds.
    Leaf(f64),
}

/// A boosted ensemble: base log-odds plus the sum of the trees' leaves.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TreeEnsemble {
    /// Log-odds before any tree.
    pub base: f64,
    /// Each tree's nodes; node 0 is the root.
    pub trees: Vec<Vec<Node>>,
    /// Feature count the trees index into.
    pub features: usize,
    /// The trees laid out complete for scoring, built on first use (`None`: too deep).
    #[serde(skip)]
    complete: OnceLock<Option<CompleteTrees>>,
}

impl PartialEq for TreeEnsemble {
    /// Equal trees; the scoring layout is derived from them.
    fn eq(&self, other: &Self) -> bool {
        self.base == other.base && self.trees == other.trees && self.features == other.features
    }
}

/// The deepest trees laid out complete (2^depth leaves a tree).
const MAX_COMPLETE_DEPTH: u32 = 8;

/// Most features the complete layout scores (a row is copied into a buffer this long, so that
/// a feature index is masked rather than bounds-checked); wider ensembles walk the nested trees.
const MAX_COMPLETE_FEATURES: usize = 64;

/// Trees scored side by side: their walks are independent chains of loads the processor
/// overlaps.
const LANES: usize = 8;

/// Every tree padded to one depth and laid out level by level, so that scoring a tree is
/// `depth` steps of index arithmetic with no branch on the data (a row goes left at node i
/// when `values[feature[i]] <= threshold[i]`, to 2i+1, else to 2i+2). A leaf above the full
/// depth becomes a split whose two subtrees hold its value at every leaf, so whichever way a
/// row goes it reaches that value: every row gets the leaf it gets in the nested trees, and
/// the sum over the trees, in the same order, is the same to the bit.
///
/// Each tree owns `2^depth` slots of every array (its `2^depth - 1` splits and one unused
/// slot; its `2^depth` leaves), so an index masked by `2^depth - 1` stays inside its tree
/// without a bounds check; the tree count is padded to a multiple of [`LANES`] with trees
/// whose leaves are all `-0.0`, which added to any sum leaves it the same to the bit.
#[derive(Clone, Debug)]
struct CompleteTrees {
    depth: u32,
    /// Per tree, 2^depth slots: the splits' feature indices.
    features: Vec<u8>,
    /// Per tree, 2^depth slots: the splits' thresholds.
    thresholds: Vec<f64>,
    /// Per tree, 2^depth leaf values.
    leaves: Vec<f64>,
}

impl CompleteTrees {
    /// The layout of `trees` (valid ones over `features` features), or `None` if one is
    /// deeper than the limit or the rows are too wide.
    fn build(trees: &[Vec<Node>], features: usize) -> Option<Self> {
        fn depth_of(tree: &[Node], index: usize) -> u32 {
            match tree[index] {
                Node::Leaf(_) => 0,
                Node::Split { left, right, .. } => {
                    1 + depth_of(tree, left as usize).max(depth_of(tree, right as usize))
                }
            }
        }
        let depth = trees
            .iter()
            .map(|tree| depth_of(tree, 0))
            .max()
            .unwrap_or(0);
        if depth > MAX_COMPLETE_DEPTH || features > MAX_COMPLETE_FEATURES {
            return None;
        }
        let slots = 1usize << depth;
        let splits = slots - 1;
        let padded = trees.len().div_ceil(LANES) * LANES;
        let mut layout = Self {
            depth,
            features: vec![0; padded * slots],
            thresholds: vec![f64::INFINITY; padded * slots],
            leaves: vec![-0.0; padded * slots],
        };
        for (index, tree) in trees.iter().enumerate() {
            let first = index * slots;
            // (node in the nested tree, slot in the complete one, level)
            let mut pending = vec![(0usize, 0usize, 0u32)];
            while let Some((node, slot, level)) = pending.pop() {
                match tree[node] {
                    Node::Split {
                        feature,
                        threshold,
                        left,
                        right,
                    } => {
                        if usize::from(feature) >= features {
                            return None; // Not a valid ensemble: the nested walk says so.
                        }
                        layout.features[first + slot] = u8::try_from(feature).ok()?;
                        layout.thresholds[first + slot] = threshold;
                        pending.push((left as usize, 2 * slot + 1, level + 1));
                        pending.push((right as usize, 2 * slot + 2, level + 1));
                    }
                    Node::Leaf(value) => {
                        // Every leaf slot under `slot` at the full depth holds the value.
                        let below = depth - level;
                        let leaf = ((slot + 1) << below) - 1 - splits;
                        layout.leaves[first + leaf..first + leaf + (1usize << below)].fill(value);
                    }
                }
            }
        }
        Some(layout)
    }

    fn log_odds(&self, base: f64, values: &[f64]) -> f64 {
        let mut row = [f64::NAN; MAX_COMPLETE_FEATURES];
        let width = values.len().min(MAX_COMPLETE_FEATURES);
        row[..width].copy_from_slice(&values[..width]);
        match self.depth {
            0 => self.sum::<1>(base, &row),
            1 => self.sum::<2>(base, &row),
            2 => self.sum::<4>(base, &row),
            3 => self.sum::<8>(base, &row),
            4 => self.sum::<16>(base, &row),
            5 => self.sum::<32>(base, &row),
            6 => self.sum::<64>(base, &row),
            7 => self.sum::<128>(base, &row),
            _ => self.sum::<256>(base, &row),
        }
    }

    /// The sum over the trees of `SLOTS = 2^depth` slots each, [`LANES`] trees walked at a
    /// time; the leaves are then added one tree after the other, in tree order.
    fn sum<const SLOTS: usize>(&self, base: f64, row: &[f64; MAX_COMPLETE_FEATURES]) -> f64 {
        let depth = SLOTS.trailing_zeros();
        let block = SLOTS * LANES;
        let groups = self
            .features
            .chunks_exact(block)
            .zip(self.thresholds.chunks_exact(block))
            .zip(self.leaves.chunks_exact(block));
        let mut sum = base;
        for ((features, thresholds), leaves) in groups {
            let tree = |lane: usize| lane * SLOTS..(lane + 1) * SLOTS;
            let features: [&[u8; SLOTS]; LANES] =
                std::array::from_fn(|lane| slots_of(&features[tree(lane)]));
            let thresholds: [&[f64; SLOTS]; LANES] =
                std::array::from_fn(|lane| slots_of(&thresholds[tree(lane)]));
            let mut slots = [0usize; LANES];
            for _ in 0..depth {
                for lane in 0..LANES {
                    let at = slots[lane] & (SLOTS - 1);
                    let feature = usize::from(features[lane][at]) & (MAX_COMPLETE_FEATURES - 1);
                    // NaN compares false: it goes right, as in the nested trees.
                    let goes_left = row[feature] <= thresholds[lane][at];
                    slots[lane] = 2 * slots[lane] + 2 - usize::from(goes_left);
                }
            }
            for (lane, slot) in slots.iter().enumerate() {
                let leaves: &[f64; SLOTS] = slots_of(&leaves[tree(lane)]);
                sum += leaves[(slot + 1 - SLOTS) & (SLOTS - 1)];
            }
        }
        sum
    }
}

/// A tree's slots as an array (the layout gives every tree exactly `SLOTS`).
fn slots_of<T, const SLOTS: usize>(slots: &[T]) -> &[T; SLOTS] {
    slots
        .try_into()
        .expect("the complete layout gives every tree 2^depth slots")
}

impl TreeEnsemble {
    /// An ensemble of `trees` over `features` features after `base` log-odds.
    pub fn new(base: f64, trees: Vec<Vec<Node>>, features: usize) -> Self {
        Self {
            base,
            trees,
            features,
            complete: OnceLock::new(),
        }
    }

    /// The log-odds of a row (from the complete layout when the trees allow it).
    pub fn log_odds(&self, values: &[f64]) -> f64 {
        debug_assert!(values.len() >= self.features, "a row of every feature");
        match self
            .complete
            .get_or_init(|| CompleteTrees::build(&self.trees, self.features))
        {
            Some(complete) => complete.log_odds(self.base, values),
            None => self.nested_log_odds(values),
        }
    }

    /// The log-odds of a row, walking the nested trees (the reference the complete layout is
    /// checked and benchmarked against).
    pub fn nested_log_odds(&self, values: &[f64]) -> f64 {
        let mut sum = self.base;
        for tree in &self.trees {
            let mut index = 0usize;
            loop {
                match tree[index] {
                    Node::Leaf(value) => {
                        sum += value;
                        break;
                    }
                    Node::Split {
                        feature,
                        threshold,
                        left,
                        right,
                    } => {
                        index = if values[usize::from(feature)] <= threshold {
                            left as usize
                        } else {
                            right as usize
                        };
                    }
                }
            }
        }
        sum
    }

    /// The probability of a row.
    pub fn probability(&self, values: &[f64]) -> f64 {
        sigmoid(self.log_odds(values))
    }

    /// Checks the structure scoring relies on (child indices inside the tree, features in
    /// range, finite numbers); names the first problem.
    pub fn validate(&self, features: usize) -> Result<(), String> {
        if self.features != features || !self.base.is_finite() {
            return Err(format!(
                "trees: built for {} features (need {features}) or a non-finite base",
                self.features
            ));
        }
        for (number, tree) in self.trees.iter().enumerate() {
            if tree.is_empty() {
                return Err(format!("trees[{number}]: empty"));
            }
            for (index, node) in tree.iter().enumerate() {
                let ok = match *node {
                    Node::Leaf(value) => value.is_finite(),
                    Node::Split {
                        feature,
                        threshold,
                        left,
                        right,
                    } => {
                        usize::from(feature) < features
                            && !threshold.is_nan()
                            && (left as usize) > index
                            && (right as usize) > index
                            && (left as usize) < tree.len()
                            && (right as usize) < tree.len()
                    }
                };
                if !ok {
                    return Err(format!("trees[{number}] node {index}: malformed"));
                }
            }
        }
        Ok(())
    }

    /// Grows an ensemble on `rows` (n x features) with 0/1 `labels`.
    pub fn fit(
        rows: &Array2<f64>,
        labels: &[bool],
        options: &BoostingOptions,
    ) -> Result<Self, String> {
        let (n, d) = rows.dim();
        if n == 0 || labels.len() != n || d == 0 || d > usize::from(u16::MAX) {
            return Err(format!(
                "training set: {n} rows of {d} features and {} labels",
                labels.len()
            ));
        }
        let bins = options.bins.clamp(2, 255);
        let edges: Vec<Vec<f64>> = (0..d)
            .map(|feature| bin_edges(rows.column(feature), bins))
            .collect();
        // Row-major bin codes.
        let mut codes = vec![0u8; n * d];
        for (row, values) in rows.outer_iter().enumerate() {
            for (feature, value) in values.iter().enumerate() {
                codes[row * d + feature] = code_of(&edges[feature], *value);
            }
        }
        let positives = labels.iter().filter(|l| **l).count() as f64;
        let base = logit(positives / n as f64);
        let mut scores = vec![base; n];
        let mut gradients = vec![0.0f64; n];
        let mut hessians = vec![0.0f64; n];
        let mut trees = Vec::with_capacity(options.trees);
        let mut leaf_of = vec![0u32; n];
        for _ in 0..options.trees {
            for row in 0..n {
                let p = sigmoid(scores[row]);
                gradients[row] = p - f64::from(u8::from(labels[row]));
                hessians[row] = (p * (1.0 - p)).max(1e-12);
            }
            let tree = grow_tree(
                &codes,
                d,
                &edges,
                &gradients,
                &hessians,
                options,
                &mut leaf_of,
            );
            for row in 0..n {
                if let Node::Leaf(value) = tree[leaf_of[row] as usize] {
                    scores[row] += value;
                }
            }
            trees.push(tree);
        }
        Ok(Self::new(base, trees, d))
    }
}

/// Quantile bin edges of a column: upper edges, the last one +inf.
fn bin_edges(column: ArrayView1<f64>, bins: usize) -> Vec<f64> {
    let mut values: Vec<f64> = column.iter().copied().filter(|v| !v.is_nan()).collect();
    values.sort_by(f64::total_cmp);
    let mut edges = Vec::with_capacity(bins);
    if !values.is_empty() {
        for bin in 1..bins {
            let edge = values[(bin * values.len() / bins).min(values.len() - 1)];
            if edges.last().is_none_or(|last| edge > *last) {
                edges.push(edge);
            }
        }
    }
    edges.push(f64::INFINITY);
    edges
}

fn code_of(edges: &[f64], value: f64) -> u8 {
    edges
        .partition_point(|edge| *edge < value)
        .min(edges.len() - 1) as u8
}

struct Open {
    node: usize,
    rows: Vec<u32>,
    depth: usize,
}

fn grow_tree(
    codes: &[u8],
    d: usize,
    edges: &[Vec<f64>],
    gradients: &[f64],
    hessians: &[f64],
    options: &BoostingOptions,
    leaf_of: &mut [u32],
) -> Vec<Node> {
    let n = gradients.len();
    let mut nodes = vec![Node::Leaf(0.0)];
    let mut open = vec![Open {
        node: 0,
        rows: (0..n as u32).collect(),
        depth: 0,
    }];
    let leaf_value = |g: f64, h: f64| -options.learning_rate * g / (h + options.l2);
    while let Some(current) = open.pop() {
        let (g_total, h_total) = current.rows.iter().fold((0.0, 0.0), |(g, h), &row| {
            (g + gradients[row as usize], h + hessians[row as usize])
        });
        let mut best: Option<(f64, usize, usize)> = None; // (gain, feature, bin)
        if current.depth < options.depth && h_total >= 2.0 * options.min_child_hessian {
            let parent = g_total * g_total / (h_total + options.l2);
            let mut histogram = vec![(0.0f64, 0.0f64); 256];
            for feature in 0..d {
                let bins = edges[feature].len();
                if bins < 2 {
                    continue;
                }
                histogram[..bins].fill((0.0, 0.0));
                for &row in &current.rows {
                    let row = row as usize;
                    let slot = &mut histogram[codes[row * d + feature] as usize];
                    slot.0 += gradients[row];
                    slot.1 += hessians[row];
                }
                let (mut g_left, mut h_left) = (0.0, 0.0);
                for (bin, (g, h)) in histogram.iter().enumerate().take(bins - 1) {
                    g_left += g;
                    h_left += h;
                    let h_right = h_total - h_left;
                    if h_left < options.min_child_hessian || h_right < options.min_child_hessian {
                        continue;
                    }
                    let g_right = g_total - g_left;
                    let gain = g_left * g_left / (h_left + options.l2)
                        + g_right * g_right / (h_right + options.l2)
                        - parent;
                    if gain > 1e-9 && best.is_none_or(|(b, _, _)| gain > b) {
                        best = Some((gain, feature, bin));
                    }
                }
            }
        }
        match best {
            None => {
                nodes[current.node] = Node::Leaf(leaf_value(g_total, h_total));
                for &row in &current.rows {
                    leaf_of[row as usize] = current.node as u32;
                }
            }
            Some((_, feature, bin)) => {
                let (left_rows, right_rows): (Vec<u32>, Vec<u32>) = current
                    .rows
                    .iter()
                    .partition(|&&row| usize::from(codes[row as usize * d + feature]) <= bin);
                let left = nodes.len();
                nodes.push(Node::Leaf(0.0));
                nodes.push(Node::Leaf(0.0));
                nodes[current.node] = Node::Split {
                    feature: feature as u16,
                    threshold: edges[feature][bin],
                    left: left as u32,
                    right: left as u32 + 1,
                };
                open.push(Open {
                    node: left + 1,
                    rows: right_rows,
                    depth: current.depth + 1,
                });
                open.push(Open {
                    node: left,
                    rows: left_rows,
                    depth: current.depth + 1,
                });
            }
        }
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn boosting_learns_an_interaction_a_line_cannot() {
        // Available when exactly one of two features is high (XOR): no linear scorer can.
        let n = 4_000;
        let mut rows = Array2::<f64>::zeros((n, 2));
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let a = ((i * 7_919) % 1_000) as f64 / 1_000.0;
            let b = ((i * 104_729) % 997) as f64 / 997.0;
            rows[[i, 0]] = a;
            rows[[i, 1]] = b;
            labels.push((a > 0.5) != (b > 0.5));
        }
        let model = TreeEnsemble::fit(&rows, &labels, &BoostingOptions::default()).expect("fits");
        model.validate(2).expect("valid");
        let correct = (0..n)
            .filter(|&i| (model.probability(&[rows[[i, 0]], rows[[i, 1]]]) > 0.5) == labels[i])
            .count();
        assert!(correct as f64 / n as f64 > 0.97, "{correct} of {n}");
        // Same rows, same model.
        let again = TreeEnsemble::fit(&rows, &labels, &BoostingOptions::default()).expect("fits");
        assert_eq!(again, model);
    }

    /// A valid tree of random shape, at most `depth` deep, over `features` features.
    fn random_tree(seed: &mut u64, features: u16, depth: u32) -> Vec<Node> {
        fn next(seed: &mut u64) -> u64 {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed
        }
        fn grow(nodes: &mut Vec<Node>, seed: &mut u64, features: u16, depth: u32) -> u32 {
            let index = nodes.len();
            nodes.push(Node::Leaf((next(seed) % 2001) as f64 / 1000.0 - 1.0));
            if depth > 0 && !next(seed).is_multiple_of(4) {
                let feature = (next(seed) % u64::from(features)) as u16;
                let threshold = (next(seed) % 100) as f64 / 10.0 - 5.0;
                let left = grow(nodes, seed, features, depth - 1);
                let right = grow(nodes, seed, features, depth - 1);
                nodes[index] = Node::Split {
                    feature,
                    threshold,
                    left,
                    right,
                };
            }
            index as u32
        }
        let mut nodes = Vec::new();
        grow(&mut nodes, seed, features, depth);
        nodes
    }

    /// Rows of `features` values: on and near the trees' thresholds, and any `f64` (NaN and
    /// the infinities included).
    fn rows(features: usize) -> impl proptest::strategy::Strategy<Value = Vec<Vec<f64>>> {
        proptest::collection::vec(
            proptest::collection::vec(
                proptest::prop_oneof![
                    (-60i32..60).prop_map(|v| f64::from(v) / 10.0),
                    proptest::num::f64::ANY,
                ],
                features,
            ),
            1..12,
        )
    }

    proptest::proptest! {
        /// The complete layout scores every row exactly as the nested trees do, NaN, the
        /// infinities and values on the thresholds included, for trees of any shape and depth
        /// up to the layout's limit, any tree count (none included) and rows as wide as the
        /// layout takes.
        #[test]
        fn the_complete_layout_scores_to_the_bit(
            seed in 1u64..u64::MAX,
            depth in 0u32..=MAX_COMPLETE_DEPTH,
            tree_count in 0usize..20,
            (features, rows) in proptest::prop_oneof![
                Just(1usize), Just(3usize), Just(MAX_COMPLETE_FEATURES)
            ]
            .prop_flat_map(|features| (Just(features), rows(features))),
        ) {
            let mut seed = seed;
            let width = u16::try_from(features).expect("narrow");
            let trees: Vec<Vec<Node>> =
                (0..tree_count).map(|_| random_tree(&mut seed, width, depth)).collect();
            let ensemble = TreeEnsemble::new(0.25, trees, features);
            ensemble.validate(features).expect("valid");
            proptest::prop_assert!(
                ensemble
                    .complete
                    .get_or_init(|| CompleteTrees::build(&ensemble.trees, features))
                    .is_some()
            );
            for row in &rows {
                let complete = ensemble.log_odds(row);
                let nested = ensemble.nested_log_odds(row);
                proptest::prop_assert_eq!(complete.to_bits(), nested.to_bits(), "row {:?}", row);
            }
        }
    }

    /// Rows wider than the complete layout takes, and trees deeper than it lays out, are
    /// scored by the nested walk.
    #[test]
    fn wide_rows_and_deep_trees_fall_back_to_the_nested_walk() {
        let mut seed = 7;
        let wide = MAX_COMPLETE_FEATURES + 1;
        let trees: Vec<Vec<Node>> = (0..5)
            .map(|_| random_tree(&mut seed, u16::try_from(wide).expect("narrow"), 3))
            .collect();
        assert!(CompleteTrees::build(&trees, wide).is_none());
        let ensemble = TreeEnsemble::new(0.5, trees, wide);
        let row: Vec<f64> = (0..wide).map(|i| i as f64 / 7.0 - 4.0).collect();
        assert_eq!(
            ensemble.log_odds(&row).to_bits(),
            ensemble.nested_log_odds(&row).to_bits()
        );
        // A chain of splits down the left, one level deeper than the layout takes.
        let mut chain = Vec::new();
        for level in 0..=MAX_COMPLETE_DEPTH {
            let index = u32::try_from(chain.len()).expect("small");
            chain.push(Node::Split {
                feature: 0,
                threshold: f64::from(level),
                left: index + 2,
                right: index + 1,
            });
            chain.push(Node::Leaf(f64::from(level)));
        }
        chain.push(Node::Leaf(-1.0));
        let deep = vec![chain];
        assert!(CompleteTrees::build(&deep, 1).is_none());
        let ensemble = TreeEnsemble::new(0.0, deep, 1);
        ensemble.validate(1).expect("valid");
        for value in [-1.0, 0.5, 4.5, 100.0, f64::NAN] {
            assert_eq!(
                ensemble.log_odds(&[value]).to_bits(),
                ensemble.nested_log_odds(&[value]).to_bits()
            );
        }
    }
}
