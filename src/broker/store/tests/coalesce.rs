//! Unit tests of the coalescing of a batch.
//!
//! Must not open a store: plans only.

use super::super::OutState;
use super::super::StoreOp;
use super::super::coalesce::{Op, coalesce};
use super::{add, remove, set_state};

#[test]
fn plan_coalesces_added_and_removed_rows() {
    let state = |seq| set_state("c", seq, OutState::Sent { pkid: 1 });
    let planned = coalesce(vec![
        remove("c", 1), // a row of an earlier batch: kept
        add("c", 2, b"x"),
        state(2), // folded into the add
        add("c", 3, b"y"),
        state(3),
        remove("c", 3), // with its add: both skipped
        add("d", 3, b"z"),
    ]);
    let kinds: Vec<String> = planned
        .iter()
        .map(|op| match op {
            Op::Add {
                client_id,
                seq,
                state,
                ..
            } => format!("add {client_id}{seq} {state:?}"),
            Op::Other(StoreOp::RemoveMessage { seq, .. }) => format!("remove {seq}"),
            Op::Other(other) => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        vec!["remove 1", "add c2 Sent { pkid: 1 }", "add d3 Queued",]
    );
}
