//! The keyspace with what a clustered node does on every write: digest
//! tree updates (always on) and changes published to the change log for
//! the peers (read every 1,024 operations, as the push path would). SET and GET of
//! 16-byte values over 100,000 existing keys, and MSET of 10 keys as the
//! command does it (`cargo bench --bench store`).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kriminodb::clock::{Clock, Version};
use kriminodb::store::{Cause, Causes, ChangeReader, Expiry, Store};

const KEYS: usize = 100_000;
const VALUE: &[u8] = b"0123456789abcdef";

fn loaded_store() -> (Store, ChangeReader) {
    let store = Store::new(Clock::system(1));
    let pusher = store.subscribe(Causes::of(&[Cause::Local]));
    let now = store.clock().wall_ms();
    for i in 0..KEYS {
        store.with_key(&key(i), now, |k| k.set(VALUE, Expiry::Persist));
    }
    let _ = store.read_changes(&pusher);
    (store, pusher)
}

fn key(i: usize) -> Vec<u8> {
    format!("key:{i:012}").into_bytes()
}

/// Spreads successive operations over the keyspace (a multiplicative
/// step, so neighbouring operations do not hit neighbouring keys).
fn pick(n: usize) -> usize {
    n.wrapping_mul(7_919) % KEYS
}

fn store_ops(c: &mut Criterion) {
    let (store, pusher) = loaded_store();
    let keys: Vec<Vec<u8>> = (0..KEYS).map(key).collect();
    let now = store.clock().wall_ms();
    let mut n = 0usize;
    let drain = |store: &Store, n: usize| {
        if n.is_multiple_of(1024) {
            black_box(store.read_changes(&pusher).map(|b| b.last_seq()).ok());
        }
    };

    c.bench_function("store/set", |b| {
        b.iter(|| {
            n += 1;
            let key = &keys[pick(n)];
            store.with_key(key, now, |k| k.set(black_box(VALUE), Expiry::Persist));
            drain(&store, n);
        });
    });

    c.bench_function("store/get", |b| {
        b.iter(|| {
            n += 1;
            let key = &keys[pick(n)];
            store.with_key(key, now, |k| black_box(k.value().map(<[u8]>::len)))
        });
    });

    c.bench_function("store/mset10", |b| {
        b.iter(|| {
            n += 1;
            let batch: Vec<&[u8]> = (0..10).map(|j| keys[pick(n * 10 + j)].as_slice()).collect();
            store.with_keys(&batch, now, |m| {
                let first = m.tick_n(batch.len() as u64);
                for (j, key) in batch.iter().enumerate() {
                    let version = Version {
                        hlc: first.hlc + j as u64,
                        ..first
                    };
                    m.key(key)
                        .set_at(black_box(VALUE), Expiry::Persist, version);
                }
            });
            drain(&store, n);
        });
    });
}

criterion_group!(benches, store_ops);
criterion_main!(benches);
