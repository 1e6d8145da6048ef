//! The batches a poller hands on, kept to be filled again: a request's
//! batch of the last cycle is taken back when the rules stage and the
//! Sparkplug node have let go of it (by then, 100 ms later at a typical
//! poll, they have), and its readings get only a new value, time and
//! quality. No allocation per reply and no point name's count touched per
//! reading (those cache lines are cold at every poll on a busy machine).
//!
//! Owns the kept batches, one per planned request (a request planned
//! again or gone drops its batch). Must not decode or send.

use std::sync::Arc;

use super::super::merge::ReadRequest;
use crate::reading::Reading;
use crate::reading::batch::Batch;

/// One kept batch per request, found by the request's allocation.
#[derive(Default)]
pub(super) struct Refill {
    kept: Vec<(Arc<ReadRequest>, Batch)>,
}

impl Refill {
    /// The readings of `req`'s last batch to write over, when nobody else
    /// holds it any more; else empty (to be filled anew).
    pub fn take(&mut self, req: &Arc<ReadRequest>) -> Vec<Reading> {
        let Some(at) = self.kept.iter().position(|(r, _)| Arc::ptr_eq(r, req)) else {
            return Vec::new();
        };
        let (_, batch) = self.kept.swap_remove(at);
        Arc::try_unwrap(batch).unwrap_or_default()
    }

    /// Keeps `batch` as `req`'s, and lets go of the batches of requests no
    /// longer in `planned`.
    pub fn keep(&mut self, req: &Arc<ReadRequest>, batch: &Batch, planned: &[Arc<ReadRequest>]) {
        self.kept.push((req.clone(), batch.clone()));
        self.kept
            .retain(|(r, _)| planned.iter().any(|p| Arc::ptr_eq(p, r)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::Value;

    fn request() -> Arc<ReadRequest> {
        Arc::new(ReadRequest {
            table: crate::southbound::modbus::points::Table::Holding,
            start: 0,
            count: 1,
            spans: Vec::new(),
        })
    }

    fn batch() -> Batch {
        let d: Arc<str> = "d".into();
        let p: Arc<str> = "p".into();
        Arc::new(vec![Reading::good(&d, &p, Value::Int(1), &None, 1)])
    }

    /// A batch comes back once the others let go, only for its own request,
    /// and not once its request is no longer planned.
    #[test]
    fn a_batch_comes_back_when_nobody_else_holds_it() {
        let (a, b) = (request(), request());
        let mut refill = Refill::default();
        let sent = batch();
        refill.keep(&a, &sent, &[a.clone(), b.clone()]);
        assert!(refill.take(&b).is_empty(), "another request's batch");
        // the rules stage still holds it
        assert!(refill.take(&a).is_empty());
        refill.keep(&a, &sent, std::slice::from_ref(&a));
        let first_reading = sent.as_ptr();
        drop(sent);
        let back = refill.take(&a);
        assert_eq!(back.len(), 1);
        assert_eq!(
            back.as_ptr(),
            first_reading,
            "the same readings, not a copy"
        );

        let sent = batch();
        refill.keep(&a, &sent, std::slice::from_ref(&b));
        drop(sent);
        assert!(refill.take(&a).is_empty(), "a request planned again");
    }
}
