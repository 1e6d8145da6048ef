use super::*;
use crate::southbound::modbus::points::Table;

/// A device that answers reads of at most `max` registers over mapped
/// addresses only (any unmapped address in a read: exception 02).
struct Device {
    max: u16,
    mapped: std::ops::RangeInclusive<u16>,
    unmapped: Vec<std::ops::RangeInclusive<u16>>,
    asked: usize,
}

impl Probe for Device {
    async fn accepts(&mut self, req: &ReadRequest) -> Option<bool> {
        self.asked += 1;
        let end = req.start + req.count - 1;
        let inside = self.mapped.contains(&req.start) && self.mapped.contains(&end);
        let holed = self
            .unmapped
            .iter()
            .any(|h| *h.start() <= end && *h.end() >= req.start);
        Some(req.count <= self.max && inside && !holed)
    }
}

fn spans(addrs: impl Iterator<Item = u16>) -> Vec<Span> {
    addrs
        .enumerate()
        .map(|(point, start)| Span {
            point,
            table: Table::Holding,
            start,
            count: 1,
        })
        .collect()
}

impl Device {
    fn new(
        max: u16,
        mapped: std::ops::RangeInclusive<u16>,
        unmapped: Vec<std::ops::RangeInclusive<u16>>,
    ) -> Device {
        Device {
            max,
            mapped,
            unmapped,
            asked: 0,
        }
    }
}

/// Learns from the merged read over `points`, refused as a whole.
async fn learn_refused(points: &[Span], probe: &mut impl Probe) -> Option<Learned> {
    let refused = &merge::merge(points, CONFIGURED)[0];
    learn(refused, CONFIGURED, &Learned::default(), probe).await
}

const CONFIGURED: Limits = Limits {
    max_gap: 10,
    max_registers: 125,
};

#[tokio::test]
async fn finds_the_largest_read_and_the_hole() {
    // points at 0..=9 and 12..=59; 10 and 11 unmapped; reads of 16 at most
    let points = spans((0..10).chain(12..60));
    let mut dev = Device::new(16, 0..=59, vec![10..=11]);
    assert_eq!(
        merge::merge(&points, CONFIGURED).len(),
        1,
        "one read of 60 is refused"
    );
    let learned = learn_refused(&points, &mut dev).await.expect("answers");
    assert_eq!(learned.max_registers, Some(16));
    assert_eq!(
        learned.holes,
        vec![Hole {
            table: Table::Holding,
            start: 10,
            end: 11
        }]
    );
    assert_eq!(
        learned.summary(),
        "max 16 registers per read; hole holding 10..=11"
    );
    // every read of the new merge is answered
    let plan = merge::merge_avoiding(&points, learned.limits(CONFIGURED), &learned.holes);
    for r in &plan {
        assert!(dev.accepts(r).await.expect("answer"), "{r} refused");
    }
    assert_eq!(plan.len(), 1 + 3, "0..=9, then 48 registers in reads of 16");
    assert!(dev.asked < 90, "{} probes", dev.asked);
}

#[tokio::test]
async fn a_hole_alone_leaves_the_size_as_configured() {
    let points = spans((0..5).chain(8..12));
    let mut dev = Device::new(125, 0..=11, vec![5..=7]);
    let learned = learn_refused(&points, &mut dev).await.expect("answers");
    assert_eq!(learned.max_registers, None);
    assert_eq!(learned.holes.len(), 1);
}

struct Gone;

impl Probe for Gone {
    async fn accepts(&mut self, _: &ReadRequest) -> Option<bool> {
        None
    }
}

#[tokio::test]
async fn a_device_that_stops_answering_teaches_nothing() {
    let points = spans(0..4);
    assert!(learn_refused(&points, &mut Gone).await.is_none());
}

#[test]
fn the_file_keeps_what_was_learned_and_a_broken_one_is_set_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Learned {
        fingerprint: fingerprint(1, &spans(0..3)),
        max_registers: Some(16),
        holes: vec![],
    };
    save(dir.path(), "meter", &l);
    assert_eq!(load(dir.path(), "meter", &l.fingerprint), Some(l.clone()));
    assert_eq!(
        load(dir.path(), "meter", "other points"),
        None,
        "config changed"
    );
    std::fs::write(dir.path().join(FILE), "{not json").expect("write");
    assert_eq!(load(dir.path(), "meter", &l.fingerprint), None);
    let aside = std::fs::read_dir(dir.path())
        .expect("read dir")
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().contains(".corrupt-"));
    assert!(aside, "the broken file was set aside");
}
