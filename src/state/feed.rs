//! The change-feed cursor. Ids come from a sequence, and on PostgreSQL concurrent transactions
//! may commit out of id order: a reader that only remembered the highest id could skip a row
//! that commits late. So ids skipped over are remembered as gaps and looked for again until
//! they show up or are old enough to be a rolled-back transaction's.
use std::collections::BTreeMap;

/// How long a skipped id is looked for before it is taken to be a rollback.
pub const GAP_PATIENCE_MS: i64 = 15_000;
/// At most this many gaps are tracked (a bulk import can skip many ids at once).
const MAX_GAPS: usize = 1024;

#[derive(Debug, Default)]
pub struct FeedCursor {
    pub high: i64,
    gaps: BTreeMap<i64, i64>,
}

impl FeedCursor {
    pub fn reset(&mut self, high: i64) {
        self.high = high;
        self.gaps.clear();
    }

    /// True if the change with this id has not been applied yet (and marks it applied).
    pub fn observe(&mut self, id: i64, now_ms: i64) -> bool {
        if id > self.high {
            let first_missing = (self.high + 1).max(id - MAX_GAPS as i64);
            for missing in first_missing..id {
                self.gaps.insert(missing, now_ms);
            }
            while self.gaps.len() > MAX_GAPS {
                self.gaps.pop_first();
            }
            self.high = id;
            true
        } else {
            self.gaps.remove(&id).is_some()
        }
    }

    pub fn open_gaps(&mut self, now_ms: i64) -> Vec<i64> {
        self.gaps.retain(|_, seen| now_ms - *seen < GAP_PATIENCE_MS);
        self.gaps.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_commits_are_applied_once() {
        let mut c = FeedCursor::default();
        assert!(c.observe(1, 0));
        assert!(c.observe(3, 0), "2 is skipped: committed later");
        assert_eq!(c.open_gaps(10), vec![2]);
        assert!(c.observe(2, 20), "the late row is applied");
        assert!(!c.observe(2, 30), "but only once");
        assert!(!c.observe(3, 30));
        assert!(c.observe(5, 100));
        assert!(c.open_gaps(100 + GAP_PATIENCE_MS).is_empty(), "rolled-back ids are given up on");
    }
}
