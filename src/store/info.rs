//! The store's INFO fields: memory, its share of stats, and the keyspace.

use std::sync::atomic::Ordering;

use super::Store;
use crate::info::InfoWriter;
use crate::stats::{human_bytes, rss_bytes, used_memory};

impl Store {
    /// INFO memory.
    pub fn memory_info(&self, w: &mut InfoWriter<'_>) {
        let used = used_memory();
        let rss = rss_bytes();
        w.field("used_memory", used);
        w.field("used_memory_human", human_bytes(used));
        w.field("used_memory_rss", rss);
        w.field("used_memory_rss_human", human_bytes(rss));
        let limit = self.memory();
        w.field("maxmemory", limit.maxmemory());
        w.field("maxmemory_human", human_bytes(limit.maxmemory()));
        w.field("maxmemory_policy", limit.policy().name());
        w.field("mem_allocator", "jemalloc");
    }

    /// The store's part of INFO stats.
    pub fn stats_info(&self, w: &mut InfoWriter<'_>) {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        w.field("expired_keys", load(&self.stats.expired_keys));
        // kriminoDB's own: peers' typed values refused as malformed.
        w.field("refused_typed_values", load(&self.stats.refused_fragments));
        let limit = self.memory();
        w.field("evicted_keys", load(&limit.evicted_keys));
        // kriminoDB's own: writes from peers applied past maxmemory under
        // noeviction (they are never refused).
        w.field(
            "replicated_writes_over_maxmemory",
            load(&limit.replicated_over),
        );
    }

    /// INFO keyspace.
    pub fn keyspace_info(&self, w: &mut InfoWriter<'_>) {
        let keys = self.len();
        if keys > 0 {
            w.field(
                "db0",
                format_args!("keys={keys},expires={},avg_ttl=0", self.volatile_len()),
            );
        }
    }
}
