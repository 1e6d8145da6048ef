//! Coalescing a batch before it is committed: an `AddMessage` whose row is
//! removed in the same batch skips both, a `SetState` of a row added in
//! the batch folds into its insert, a `DeleteSession` skips the client's
//! earlier ops of the batch, the last retained op per topic wins.
//!
//! Owns no SQL and no state beyond one batch. Must not reorder ops that
//! touch the same row.

use std::collections::HashMap;

use super::{OutState, StoreOp, StoredMessage};

/// An op as the writer applies it.
#[derive(Debug)]
pub(super) enum Op {
    /// `AddMessage`, with a `SetState` of the same batch folded in.
    Add {
        client_id: String,
        seq: u64,
        msg: StoredMessage,
        state: OutState,
    },
    /// Any other op, as pushed.
    Other(StoreOp),
}

#[derive(Default)]
struct ClientOps {
    /// Positions of this client's ops in the coalesced batch.
    ops: Vec<usize>,
    /// Position of the `Add` of each seq added in this batch.
    adds: HashMap<u64, usize>,
}

/// The batch with cheap redundancies removed; order kept otherwise.
pub(super) fn coalesce(batch: Vec<StoreOp>) -> Vec<Op> {
    let mut out: Vec<Option<Op>> = Vec::with_capacity(batch.len());
    let mut clients: HashMap<String, ClientOps> = HashMap::new();
    let mut retained: HashMap<String, usize> = HashMap::new();
    fn client<'a>(clients: &'a mut HashMap<String, ClientOps>, id: &str) -> &'a mut ClientOps {
        clients.entry(id.to_string()).or_default()
    }
    for op in batch {
        let at = out.len();
        match op {
            StoreOp::AddMessage {
                client_id,
                seq,
                msg,
            } => {
                let c = client(&mut clients, &client_id);
                c.ops.push(at);
                c.adds.insert(seq, at);
                out.push(Some(Op::Add {
                    client_id,
                    seq,
                    msg,
                    state: OutState::Queued,
                }));
            }
            StoreOp::SetState {
                client_id,
                seq,
                state,
            } => {
                let c = client(&mut clients, &client_id);
                let added = c.adds.get(&seq).and_then(|&a| out[a].as_mut());
                if let Some(Op::Add { state: s, .. }) = added {
                    *s = state;
                } else {
                    c.ops.push(at);
                    out.push(Some(Op::Other(StoreOp::SetState {
                        client_id,
                        seq,
                        state,
                    })));
                }
            }
            StoreOp::RemoveMessage { client_id, seq } => {
                let c = client(&mut clients, &client_id);
                match c.adds.remove(&seq) {
                    Some(a) if matches!(out[a], Some(Op::Add { .. })) => out[a] = None,
                    _ => {
                        c.ops.push(at);
                        out.push(Some(Op::Other(StoreOp::RemoveMessage { client_id, seq })));
                    }
                }
            }
            StoreOp::DeleteSession { client_id } => {
                if let Some(c) = clients.remove(&client_id) {
                    for i in c.ops {
                        out[i] = None;
                    }
                }
                client(&mut clients, &client_id).ops.push(at);
                out.push(Some(Op::Other(StoreOp::DeleteSession { client_id })));
            }
            StoreOp::SaveSession { ref client_id, .. }
            | StoreOp::Subscribe { ref client_id, .. }
            | StoreOp::SetClock { ref client_id, .. }
            | StoreOp::Unsubscribe { ref client_id, .. }
            | StoreOp::AddInbound { ref client_id, .. }
            | StoreOp::RemoveInbound { ref client_id, .. } => {
                client(&mut clients, client_id).ops.push(at);
                out.push(Some(Op::Other(op)));
            }
            StoreOp::SetRetained {
                msg: StoredMessage { ref topic, .. },
            }
            | StoreOp::ClearRetained { ref topic } => {
                if let Some(prev) = retained.insert(topic.clone(), at) {
                    out[prev] = None;
                }
                out.push(Some(Op::Other(op)));
            }
        }
    }
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    //! Unit tests of the coalescing of a batch.
    //!
    //! Must not open a store: plans only.

    use super::super::OutState;
    use super::super::StoreOp;
    use super::super::coalesce::{Op, coalesce};
    use super::super::tests::{add, remove, set_state};

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
}
