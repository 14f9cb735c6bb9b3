//! What the metrics cost at fleet scale: the heap held by the per-resource gauges of N
//! resources (default 100,000, over 10 policies, ids as long as Vercel's partner ids tend to
//! be), and the size and time of one scrape. The ids are made first, as the daemon's keys
//! hold them already: the gauges share them (as the daemon's do), so what is counted is what
//! the metrics add. A benchmark, not a test: CI only builds it.
//!
//! ```sh
//! cargo run --example metrics_memory            # N = 100000
//! cargo run --release --example metrics_memory -- 200000
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use vercel_secret_rotator::metrics::Metrics;

/// Counts the bytes live on the heap.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let policies: Vec<Arc<str>> = (0..10).map(|i| Arc::from(format!("policy-{i}"))).collect();
    // A 24-character id, like `store_2bH7kq9XWmP4rT8yLc`.
    let ids: Vec<Arc<str>> = (0..n)
        .map(|i| Arc::from(format!("store_{i:018}")))
        .collect();
    let at = |s: i64| DateTime::<Utc>::from_timestamp(s, 0);

    let before = live();
    let metrics = Metrics::new();
    metrics.set_policies(policies.iter().map(|p| &**p));
    let empty = live() - before;
    let start = Instant::now();
    for i in 0..n {
        let policy = &policies[i % policies.len()];
        metrics.set_resource(
            policy.clone(),
            ids[i].clone(),
            at(1_760_000_000 + i as i64),
            at(1_770_000_000 + i as i64),
        );
    }
    let filled = start.elapsed();
    let held = live() - before;
    let per = (held - empty) as f64 / n as f64;

    // Updating every resource again allocates nothing that stays.
    for i in 0..n {
        let policy = &policies[i % policies.len()];
        metrics.set_resource(policy.clone(), ids[i].clone(), at(1_760_100_000), None);
    }
    let after_update = live() - before;

    let start = Instant::now();
    let text = metrics.encode();
    let encoded = start.elapsed();
    let lines = text.lines().count();
    drop(text);

    println!(
        "resources:                {n} over {} policies",
        policies.len()
    );
    println!("metrics, empty:           {} KiB", empty / 1024);
    println!(
        "metrics, {n} resources: {:.1} MiB ({per:.0} bytes per resource, both gauges)",
        held as f64 / (1024.0 * 1024.0)
    );
    println!(
        "after updating all again: {:.1} MiB",
        after_update as f64 / (1024.0 * 1024.0)
    );
    println!("setting all:              {}", ms(filled));
    println!("one scrape:               {lines} lines in {}", ms(encoded));
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
