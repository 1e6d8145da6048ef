//! The SQL that deletes acknowledged rows: a range delete per run of
//! consecutive ids, `IN` lists for the rest, each returning the sizes it
//! deleted (the writer's exact counts).
//!
//! Owns the statement text only. Must not run anything.

use super::Acked;

/// The DELETE statements for acknowledged rows: a range delete per run of
/// consecutive ids, `IN` lists for the others. The ids are integers written
/// by `format!`, nothing from outside.
pub(super) fn delete_sql(acks: &[Acked]) -> String {
    use std::fmt::Write;
    let ids: Vec<i64> = acks.iter().map(|a| a.0).collect();
    let (runs, singles) = runs(&ids);
    let mut sql = String::new();
    for (lo, hi) in runs {
        let _ = write!(
            sql,
            "DELETE FROM outbox WHERE id BETWEEN {lo} AND {hi} RETURNING size;"
        );
    }
    for chunk in singles.chunks(500) {
        let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
        let _ = write!(
            sql,
            "DELETE FROM outbox WHERE id IN ({}) RETURNING size;",
            list.join(",")
        );
    }
    sql
}

/// Acknowledged ids as runs of consecutive ids `[lo, hi]` (one range
/// delete each) and the ids that stand alone.
pub(super) fn runs(acks: &[i64]) -> (Vec<(i64, i64)>, Vec<i64>) {
    let mut ids = acks.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let (mut runs, mut singles) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        if j > i {
            runs.push((ids[i], ids[j]));
        } else {
            singles.push(ids[i]);
        }
        i = j + 1;
    }
    (runs, singles)
}
