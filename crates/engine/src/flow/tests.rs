//! The index against a set: inserts and removals in any order, chains that
//! overflow their home bucket, a table filled to the last entry.

use std::collections::HashMap;

use proptest::prelude::*;

use super::id::FlowId;
use super::table::tests::entry;
use super::table::{Store, NONE};

fn id(n: u16) -> FlowId {
    FlowId::new(false, 17, 0x0a00_0001, 0x0a00_0002, n, 53)
}

#[derive(Clone, Debug)]
enum Op {
    Insert(u16),
    Remove(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u16..120).prop_map(Op::Insert),
        2 => (0u16..120).prop_map(Op::Remove),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// A small table (a few buckets: chains overflow, the shard fills) agrees
    /// with a map on every insert, removal and lookup, and never holds more than max.
    #[test]
    fn index_agrees_with_a_map(max in 1u32..80, ops in prop::collection::vec(op(), 1..400)) {
        let store = Store::new(max, [7, 11, 13, 17]);
        let mut model: HashMap<u16, u32> = HashMap::new();
        for op in ops {
            match op {
                Op::Insert(n) => {
                    let fid = id(n);
                    let p = store.place(&fid);
                    match store.insert(&fid, &p, &entry()) {
                        Ok((e, new)) => {
                            prop_assert_eq!(new, !model.contains_key(&n));
                            if let Some(&old) = model.get(&n) {
                                prop_assert_eq!(old, e);
                            }
                            model.insert(n, e);
                        }
                        Err(_) => prop_assert!(
                            !model.contains_key(&n) && model.len() == store.max as usize,
                            "refused with {} of {} entries", model.len(), store.max
                        ),
                    }
                }
                Op::Remove(n) => {
                    let fid = id(n);
                    let p = store.place(&fid);
                    let e = store.find(&fid, &p);
                    match model.remove(&n) {
                        Some(want) => {
                            prop_assert_eq!(e, want);
                            prop_assert!(store.remove(e, &fid, &p));
                            prop_assert!(!store.remove(e, &fid, &p), "removed twice");
                        }
                        None => prop_assert_eq!(e, NONE),
                    }
                }
            }
            prop_assert_eq!(store.active.load(std::sync::atomic::Ordering::Relaxed) as usize, model.len());
            prop_assert!(model.len() <= store.max as usize);
        }
        for n in 0..120u16 {
            let fid = id(n);
            let e = store.find(&fid, &store.place(&fid));
            prop_assert_eq!(e, model.get(&n).copied().unwrap_or(NONE), "flow {}", n);
        }
    }
}

#[test]
fn a_table_fills_to_exactly_max() {
    for max in [1u32, 2, 11, 12, 100, 1000, 20_000, 60_000] {
        let store = Store::new(max, [1, 2, 3, 4]);
        let mut ok = 0;
        for n in 0..max as u16 + 10 {
            let fid = id(n);
            let p = store.place(&fid);
            if store.insert(&fid, &p, &entry()).is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, max, "max {max}");
    }
}

/// Keys that differ in one field only (a port, the low or the high bits of
/// an address, IPv4 or IPv6) spread over every shard and bucket: no home
/// bucket gets three times its share.
#[test]
fn sequential_keys_spread_over_the_index() {
    type Family = (&'static str, fn(u32) -> FlowId);
    let families: [Family; 5] = [
        ("src port", |n| {
            FlowId::new(false, 6, 0x0a00_0001, 0xc633_6407, n as u16, 443)
        }),
        ("dst port", |n| {
            FlowId::new(false, 17, 0x0a00_0001, 0xc633_6407, 5353, n as u16)
        }),
        ("v4 host", |n| {
            FlowId::new(false, 6, 0x0a00_0000 + n as u128, 0xc633_6407, 40000, 443)
        }),
        ("v6 host", |n| {
            FlowId::new(true, 6, 0x2001_0db8 << 96 | n as u128, 1, 40000, 443)
        }),
        ("v6 prefix", |n| {
            FlowId::new(true, 6, (n as u128) << 80, 1, 40000, 443)
        }),
    ];
    for seed in [[1, 2, 3, 4], [0xdead, 0xbeef, 0xf00d, 0xcafe]] {
        let store = Store::new(60_000, seed);
        for (what, make) in families {
            let mut homes = HashMap::new();
            for n in 0..60_000u32 {
                *homes.entry(store.place(&make(n)).home_bucket()).or_insert(0u32) += 1;
            }
            let share = 60_000.0 / store.bucket_count() as f64;
            let worst = *homes.values().max().unwrap() as f64;
            assert!(worst < 3.0 * share, "{what}: a bucket got {worst}, share {share}");
            assert!(
                homes.len() as f64 > 0.9 * store.bucket_count() as f64,
                "{what}: {} buckets used",
                homes.len()
            );
        }
    }
}
