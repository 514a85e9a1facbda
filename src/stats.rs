//! Node-wide counters for INFO, and memory figures from the allocator.
//!
//! jemalloc is the allocator (as in Redis), which also makes `used_memory`
//! the same measure Redis reports: bytes allocated by the process, read from
//! jemalloc's own statistics at no per-allocation cost. The binary installs
//! it (`main.rs`), and so do the test binaries; a program that embeds the
//! library with another allocator reads jemalloc's figures, which are then
//! near zero, and `--maxmemory` cannot work there.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    pub total_connections_received: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub total_commands_processed: AtomicU64,
    pub net_input_bytes: AtomicU64,
    pub net_output_bytes: AtomicU64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// The connection counters of INFO stats.
    pub fn info(&self, w: &mut crate::info::InfoWriter<'_>) {
        for (name, counter) in [
            (
                "total_connections_received",
                &self.total_connections_received,
            ),
            ("total_commands_processed", &self.total_commands_processed),
            ("total_net_input_bytes", &self.net_input_bytes),
            ("total_net_output_bytes", &self.net_output_bytes),
            ("rejected_connections", &self.rejected_connections),
        ] {
            w.field(name, Self::get(counter));
        }
    }

    pub fn reset(&self) {
        for c in [
            &self.total_connections_received,
            &self.rejected_connections,
            &self.total_commands_processed,
            &self.net_input_bytes,
            &self.net_output_bytes,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// Bytes currently allocated through the allocator (Redis's `used_memory`).
pub fn used_memory() -> u64 {
    // jemalloc's statistics are cached until the epoch advances.
    let _ = tikv_jemalloc_ctl::epoch::advance();
    tikv_jemalloc_ctl::stats::allocated::read().map_or(0, |n| n as u64)
}

/// Resident set size of the process, from /proc (0 where unavailable).
pub fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// `1.50M`-style sizes as in Redis's `used_memory_human`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [(&str, f64); 4] = [
        ("G", 1024.0 * 1024.0 * 1024.0),
        ("M", 1024.0 * 1024.0),
        ("K", 1024.0),
        ("B", 1.0),
    ];
    for (unit, size) in UNITS {
        if n as f64 >= size && unit != "B" {
            return format!("{:.2}{unit}", n as f64 / size);
        }
    }
    format!("{n}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_memory_tracks_allocations() {
        // Large against whatever tests running in parallel free meanwhile.
        let before = used_memory();
        let block = vec![1u8; 64 << 20];
        let during = used_memory();
        drop(block);
        assert!(during >= before + (48 << 20), "{before} -> {during}");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(1536), "1.50K");
        assert_eq!(human_bytes(3 << 20), "3.00M");
    }
}
