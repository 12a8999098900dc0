//! From linked pairs to removals, without chaining.
//!
//! Connected components chain: if A looks like B and B like C, a component holds A, B and C
//! although A and C may be different pictures. So a pool row is removed only as a copy of the
//! representative kept for it, linked to it directly: rows are visited best first (the
//! [`crate::KeepRule`] order); an unassigned row becomes a representative and takes every
//! unassigned row linked to it. A component whose members are not all linked to one row is
//! thereby split into several groups, each with its own kept image. Two representatives are never
//! linked, and every removed row is linked to its own.

use std::collections::HashMap;

use crate::UnionFind;
use crate::links::{Basis, Evidence};

/// What a removed row duplicates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// A pool row that is kept instead.
    Pool(usize),
    /// An evaluation image.
    Evaluation(usize),
}

/// One removed row: what it duplicates and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Removal {
    /// The kept row or the evaluation image.
    pub target: Target,
    /// The link that decided.
    pub evidence: Evidence,
}

/// How the pool's rows fell into groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grouping {
    /// Groups, each with one kept representative (rows without copies count as groups of one).
    pub groups: usize,
    /// Connected components of the links among the same rows.
    pub components: usize,
    /// Components that were split because not all their members are copies of one row.
    pub split_components: usize,
}

/// Removes, among the rows still without a removal, every row linked to a better one that is
/// kept. `order` lists the pool's rows best first; `links` are pool pairs `(a, b, evidence)`.
pub fn remove_copies(
    order: &[usize],
    links: &[(usize, usize, Evidence)],
    removals: &mut [Option<Removal>],
) -> Grouping {
    let n = removals.len();
    let active = |i: usize| i < n && removals[i].is_none();
    let mut adjacent: Vec<Vec<(usize, Evidence)>> = vec![Vec::new(); n];
    let mut uf = UnionFind::new(n);
    for &(a, b, evidence) in links {
        if active(a) && active(b) {
            adjacent[a].push((b, evidence));
            adjacent[b].push((a, evidence));
            uf.union(a, b);
        }
    }
    let mut assigned: Vec<bool> = (0..n).map(|i| !active(i)).collect();
    let mut representatives = Vec::new();
    for &rep in order {
        if assigned[rep] {
            continue;
        }
        assigned[rep] = true;
        representatives.push(rep);
        for &(member, evidence) in &adjacent[rep] {
            if !assigned[member] {
                assigned[member] = true;
                removals[member] = Some(Removal {
                    target: Target::Pool(rep),
                    evidence,
                });
            }
        }
    }
    let mut groups_per_component: HashMap<usize, usize> = HashMap::new();
    for &rep in &representatives {
        *groups_per_component.entry(uf.find(rep)).or_default() += 1;
    }
    Grouping {
        groups: representatives.len(),
        components: groups_per_component.len(),
        split_components: groups_per_component.values().filter(|&&g| g > 1).count(),
    }
}

/// Marks every pool row (of `n`) in a connected component, over `links` among pool rows
/// (`0..n`) and evaluation images (`n..n + m`), that holds an evaluation image: the paper drops
/// such components whole. A row linked to an evaluation image directly names the most similar
/// one; the others name their component's first evaluation image, with [`Basis::Component`] and
/// the cosine `similarity(row, evaluation image)`.
pub fn remove_evaluation_overlap(
    n: usize,
    m: usize,
    links: &[(usize, usize, Evidence)],
    similarity: impl Fn(usize, usize) -> f32,
    removals: &mut [Option<Removal>],
) {
    let mut uf = UnionFind::new(n + m);
    let mut direct: HashMap<usize, (usize, Evidence)> = HashMap::new();
    for &(a, b, evidence) in links {
        uf.union(a, b);
        if a < n && b >= n {
            let e = b - n;
            let better = direct
                .get(&a)
                .is_none_or(|(_, known)| evidence.score > known.score);
            if better {
                direct.insert(a, (e, evidence));
            }
        }
    }
    let mut evaluation_of_root = HashMap::new();
    for e in 0..m {
        evaluation_of_root.entry(uf.find(n + e)).or_insert(e);
    }
    for (i, removal) in removals.iter_mut().enumerate().take(n) {
        let (e, evidence) = match (direct.get(&i), evaluation_of_root.get(&uf.find(i))) {
            (Some(&(e, evidence)), _) => (e, evidence),
            (None, Some(&e)) => (
                e,
                Evidence {
                    score: similarity(i, e),
                    basis: Basis::Component,
                },
            ),
            (None, None) => continue,
        };
        *removal = Some(Removal {
            target: Target::Evaluation(e),
            evidence,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(a: usize, b: usize, score: f32) -> (usize, usize, Evidence) {
        (
            a,
            b,
            Evidence {
                score,
                basis: Basis::Descriptor,
            },
        )
    }

    #[test]
    fn a_chain_of_three_distinct_pictures_is_split() {
        // 0 ~ 1 and 1 ~ 2 just above the threshold, 0 and 2 not linked: one component, but 2 is
        // not a copy of the kept 0, so it keeps its own group.
        let mut removals = vec![None; 3];
        let grouping = remove_copies(
            &[0, 1, 2],
            &[link(0, 1, 0.94), link(1, 2, 0.94)],
            &mut removals,
        );
        assert_eq!(
            grouping,
            Grouping {
                groups: 2,
                components: 1,
                split_components: 1
            }
        );
        assert_eq!(removals[0], None);
        assert_eq!(removals[1].map(|r| r.target), Some(Target::Pool(0)));
        assert_eq!(removals[2], None);
    }

    #[test]
    fn the_best_row_takes_every_copy_linked_to_it() {
        // A star around row 2 (the best), and row 4 linked only to row 3.
        let mut removals = vec![None; 5];
        let grouping = remove_copies(
            &[2, 0, 1, 3, 4],
            &[
                link(0, 2, 0.99),
                link(1, 2, 0.97),
                link(2, 3, 0.95),
                link(3, 4, 0.99),
            ],
            &mut removals,
        );
        assert_eq!(grouping.groups, 2);
        for i in [0, 1, 3] {
            assert_eq!(removals[i].map(|r| r.target), Some(Target::Pool(2)), "{i}");
        }
        assert_eq!(removals[3].map(|r| r.evidence.score), Some(0.95));
        assert_eq!(removals[4], None, "4 is not a copy of the kept 2");
    }

    #[test]
    fn rows_already_removed_take_no_part() {
        let mut removals = vec![None; 3];
        removals[1] = Some(Removal {
            target: Target::Evaluation(0),
            evidence: Evidence {
                score: 0.9,
                basis: Basis::Component,
            },
        });
        let grouping = remove_copies(
            &[0, 1, 2],
            &[link(0, 1, 0.99), link(1, 2, 0.99)],
            &mut removals,
        );
        assert_eq!(grouping.groups, 2);
        assert_eq!(removals[0], None);
        assert_eq!(removals[2], None);
        assert_eq!(removals[1].map(|r| r.target), Some(Target::Evaluation(0)));
    }

    #[test]
    fn evaluation_components_name_direct_links_first() {
        // Pool rows 0, 1, 2; evaluation image 0 is vertex 3. Row 0 is linked to it, row 1 only
        // through row 0, row 2 not at all.
        let mut removals = vec![None; 3];
        remove_evaluation_overlap(
            3,
            1,
            &[link(0, 3, 0.9), link(0, 1, 0.95)],
            |_, _| 0.5,
            &mut removals,
        );
        assert_eq!(
            removals[0].map(|r| (r.target, r.evidence.basis)),
            Some((Target::Evaluation(0), Basis::Descriptor))
        );
        assert_eq!(
            removals[1].map(|r| (r.target, r.evidence)),
            Some((
                Target::Evaluation(0),
                Evidence {
                    score: 0.5,
                    basis: Basis::Component
                }
            ))
        );
        assert_eq!(removals[2], None);
    }
}
