//! The forwarder's send cursor: which outbox rows go upstream next.
//!
//! Owns the id ranges not yet handed out, the live cursor of
//! `drain: live_first`, the rows read ahead, and an epoch that voids a read
//! started before the cursor moved (a rewind or a reconnect). Must not do
//! I/O: it says which rows to read next ([`Fetch`]); the forwarder runs them
//! (`outbox::fetch`) next to the upstream connection and hands the rows
//! back through [`Cursor::on_rows`].
//!
//! `fifo`: one range `[0, ∞)`, read in id (commit) order. `live_first`: at
//! each connect, rows committed from then on are live and read first; the
//! backlog (older rows, a list of ranges) is read behind them, only as far
//! as the window has room, so a live row never waits behind read-ahead.

use std::collections::VecDeque;

use super::config::Drain;
use super::outbox::Stored;

/// Most rows read from the outbox at a time (the forwarder asks for fewer
/// when rows are large, see the `forward` module).
pub const READ_AHEAD: usize = 512;

/// One read to run: rows with `lo <= id < hi`, at most `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetch {
    pub lo: i64,
    pub hi: i64,
    pub limit: usize,
    live: bool,
    epoch: u64,
}

impl Fetch {
    /// A read that can see rows committed after it started.
    pub fn open_ended(&self) -> bool {
        self.hi == i64::MAX
    }
}

pub struct Cursor {
    drain: Drain,
    /// Not yet handed out: id ranges `[lo, hi)`, ascending.
    ranges: VecDeque<(i64, i64)>,
    /// `live_first`: the next live id to look at.
    live: Option<i64>,
    /// `live_first`: the first id committed since the last connect.
    live_from: Option<i64>,
    /// The last live read found nothing: read the backlog next.
    skip_live: bool,
    /// Read ahead, not yet handed to the upstream link.
    pub ready: VecDeque<Stored>,
    /// Nothing left to read until the committed id moves.
    pub caught_up: bool,
    epoch: u64,
}

impl Cursor {
    pub fn new(drain: Drain) -> Cursor {
        let mut ranges = VecDeque::new();
        if drain == Drain::Fifo {
            ranges.push_back((0, i64::MAX));
        }
        Cursor {
            drain,
            ranges,
            live: None,
            live_from: None,
            skip_live: false,
            ready: VecDeque::new(),
            caught_up: false,
            epoch: 0,
        }
    }

    /// A commit or a connect: there may be rows to read again.
    pub fn wake(&mut self) {
        self.caught_up = false;
    }

    /// At a connect with `live_first`: rows from `next_id` on are live; the
    /// live rows not yet read join the backlog.
    pub fn mark_live(&mut self, next_id: i64) {
        if self.drain != Drain::LiveFirst {
            return;
        }
        match self.live {
            Some(l) if l < next_id => self.ranges.push_back((l, next_id)),
            Some(_) => {}
            None => self.ranges.push_back((0, next_id)),
        }
        self.live = Some(next_id);
        self.live_from = Some(next_id);
        self.skip_live = false;
        self.epoch += 1;
        self.wake();
    }

    /// `live_first`: row `id` was committed since the last connect (never
    /// under `fifo`, where every row waits its turn).
    pub fn is_live(&self, id: i64) -> bool {
        self.live_from.is_some_and(|l| id >= l)
    }

    /// Rows handed out but not acknowledged (`ids`) and the rows read ahead
    /// go back to the ranges, to be sent again in order.
    pub fn rewind(&mut self, ids: impl Iterator<Item = i64>) {
        let mut ids: Vec<i64> = ids.chain(self.ready.drain(..).map(|r| r.id)).collect();
        ids.sort_unstable();
        let mut ranges: Vec<(i64, i64)> = self.ranges.drain(..).collect();
        ranges.extend(ids.into_iter().map(|id| (id, id + 1)));
        ranges.sort_unstable();
        self.ranges = ranges.into();
        self.epoch += 1;
        self.wake();
    }

    /// Whether a read should start now (`room`: free window slots;
    /// `rows`: the most rows a read may bring).
    pub fn wants_read(&self, room: usize, rows: usize) -> bool {
        !self.caught_up
            && match self.drain {
                Drain::Fifo => self.ready.len() < rows,
                Drain::LiveFirst => self.ready.is_empty() && room > 0,
            }
    }

    /// The next read of at most `rows` rows, or `None` (and caught up) when
    /// there is nothing to read.
    pub fn next_fetch(&mut self, room: usize, rows: usize) -> Option<Fetch> {
        let rows = rows.clamp(1, READ_AHEAD);
        if self.caught_up {
            return None;
        }
        let fetch = |lo, hi, limit, live| Fetch {
            lo,
            hi,
            limit,
            live,
            epoch: self.epoch,
        };
        if let Some(l) = self.live
            && !self.skip_live
        {
            return Some(fetch(l, i64::MAX, rows, true));
        }
        match self.ranges.front() {
            Some(&(lo, hi)) => {
                let limit = match self.drain {
                    Drain::Fifo => rows,
                    Drain::LiveFirst => room.clamp(1, rows),
                };
                Some(fetch(lo, hi, limit, false))
            }
            None => {
                self.caught_up = true;
                self.skip_live = false;
                None
            }
        }
    }

    /// The rows a read of `fetch` returned, in id order. Returns the ids
    /// that went into `ready` (none when the read was voided).
    pub fn on_rows(&mut self, fetch: Fetch, rows: Vec<Stored>) -> Vec<i64> {
        if fetch.epoch != self.epoch {
            return Vec::new(); // the cursor moved meanwhile: these rows are in the ranges
        }
        let ids = rows.iter().map(|r| r.id).collect();
        let next = rows.last().map(|r| r.id + 1);
        if fetch.live {
            match next {
                Some(n) => self.live = Some(n),
                None => self.skip_live = true,
            }
            self.ready.extend(rows);
            return ids;
        }
        match next {
            Some(n) => {
                if n >= fetch.hi {
                    self.ranges.pop_front();
                } else if let Some(front) = self.ranges.front_mut() {
                    front.0 = n;
                }
                self.skip_live = false;
                self.ready.extend(rows);
            }
            None if fetch.open_ended() => {
                self.caught_up = true;
                self.skip_live = false;
            }
            None => {
                self.ranges.pop_front();
            }
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(ids: std::ops::Range<i64>) -> Vec<Stored> {
        ids.map(|id| Stored {
            id,
            topic: "t".into(),
            payload: bytes::Bytes::new(),
            qos: 1,
            retain: false,
            created_ms: 0,
            size: 1,
            attempts: 0,
            released: false,
        })
        .collect()
    }

    fn ready_ids(c: &mut Cursor) -> Vec<i64> {
        c.ready.drain(..).map(|r| r.id).collect()
    }

    #[test]
    fn fifo_reads_in_order_and_catches_up() {
        let mut c = Cursor::new(Drain::Fifo);
        let p = c.next_fetch(10, READ_AHEAD).expect("fetch");
        assert_eq!((p.lo, p.hi), (0, i64::MAX));
        c.on_rows(p, rows(1..4));
        assert_eq!(ready_ids(&mut c), vec![1, 2, 3]);
        let p = c.next_fetch(10, READ_AHEAD).expect("fetch");
        assert_eq!(p.lo, 4);
        c.on_rows(p, Vec::new());
        assert!(c.caught_up && !c.wants_read(10, READ_AHEAD));
    }

    #[test]
    fn live_first_reads_live_rows_before_the_backlog() {
        let mut c = Cursor::new(Drain::LiveFirst);
        c.mark_live(100); // rows below 100 are backlog
        let p = c.next_fetch(5, READ_AHEAD).expect("live");
        assert_eq!(p.lo, 100);
        c.on_rows(p, rows(100..102));
        assert_eq!(ready_ids(&mut c), vec![100, 101]);
        let p = c.next_fetch(5, READ_AHEAD).expect("live again");
        c.on_rows(p, Vec::new());
        let p = c.next_fetch(5, READ_AHEAD).expect("backlog");
        assert_eq!((p.lo, p.hi, p.limit), (0, 100, 5));
        c.on_rows(p, rows(1..6));
        let p = c.next_fetch(5, READ_AHEAD).expect("live first again");
        assert_eq!(p.lo, 102);
    }

    #[test]
    fn a_read_from_before_a_rewind_is_ignored() {
        let mut c = Cursor::new(Drain::Fifo);
        let p = c.next_fetch(10, READ_AHEAD).expect("fetch");
        c.on_rows(p, rows(3..6));
        let sent = c.ready.pop_front().expect("row 3").id;
        let stale = c.next_fetch(10, READ_AHEAD).expect("fetch");
        c.rewind([sent].into_iter());
        c.on_rows(stale, rows(6..8));
        assert!(c.ready.is_empty());
        let mut order = Vec::new();
        while let Some(p) = c.next_fetch(10, READ_AHEAD) {
            let got = rows(p.lo..p.hi.min(8));
            if got.is_empty() {
                c.on_rows(p, got);
                continue;
            }
            order.extend(got.iter().map(|r| r.id));
            c.on_rows(p, got);
            c.ready.clear();
        }
        assert_eq!(
            order,
            vec![3, 4, 5, 6, 7],
            "sent again in order, nothing lost"
        );
    }
}
