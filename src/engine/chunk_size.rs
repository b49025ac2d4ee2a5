//! Adaptive chunk size: with a target chunk time, each chunk's size follows how long the last one
//! took, so a copy keeps short locks on a loaded server and big chunks on an idle one. Without a
//! target, the size is the user's `chunk-size` (gh-ost's behaviour).

use std::time::Duration;

/// gh-ost's bounds for --chunk-size.
pub const MIN_CHUNK: u64 = 10;
pub const MAX_CHUNK: u64 = 100_000;
/// A chunk grows or shrinks by at most this factor at a time, so one odd chunk (a stall, a cold
/// page) cannot swing the size.
const MAX_STEP: f64 = 2.0;

#[derive(Clone, Debug)]
pub struct ChunkSizer {
    target: Option<Duration>,
    /// The user's chunk-size the current size started from; a new one restarts from it.
    requested: u64,
    current: u64,
}

impl ChunkSizer {
    pub fn new(target: Option<Duration>, requested: u64) -> Self {
        let requested = requested.clamp(MIN_CHUNK, MAX_CHUNK);
        Self {
            target: target.filter(|t| !t.is_zero()),
            requested,
            current: requested,
        }
    }

    /// The size of the next chunk, given the user's current chunk-size.
    pub fn next(&mut self, requested: u64) -> u64 {
        let requested = requested.clamp(MIN_CHUNK, MAX_CHUNK);
        if requested != self.requested {
            self.requested = requested;
            self.current = requested;
        }
        if self.target.is_none() {
            self.current = requested;
        }
        self.current
    }

    /// Records that the last chunk took `elapsed`; sizes the next one toward the target. (Only
    /// the table's last chunk can be partial, and nothing follows it.)
    pub fn observe(&mut self, elapsed: Duration) {
        let Some(target) = self.target else {
            return;
        };
        if elapsed.is_zero() {
            return;
        }
        let factor = (target.as_secs_f64() / elapsed.as_secs_f64()).clamp(1.0 / MAX_STEP, MAX_STEP);
        let next = (self.current as f64 * factor).round() as u64;
        self.current = next.clamp(MIN_CHUNK, MAX_CHUNK);
    }

    /// The last chunk waited too long for row locks: the next is half as big (adaptive sizes
    /// only; a fixed chunk-size is the user's).
    pub fn back_off(&mut self) {
        if self.target.is_some() {
            self.current = (self.current / 2).max(MIN_CHUNK);
        }
    }

    pub fn current(&self) -> u64 {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn without_a_target_the_size_is_the_users() {
        let mut sizer = ChunkSizer::new(None, 1000);
        assert_eq!(sizer.next(1000), 1000);
        sizer.observe(5 * MS);
        assert_eq!(sizer.next(1000), 1000);
        assert_eq!(sizer.next(2000), 2000, "a control change applies at once");
    }

    #[test]
    fn fast_chunks_grow_slow_chunks_shrink_by_at_most_twice() {
        let mut sizer = ChunkSizer::new(Some(100 * MS), 1000);
        assert_eq!(sizer.next(1000), 1000);
        sizer.observe(10 * MS);
        assert_eq!(sizer.next(1000), 2000, "10x too fast: doubled, not 10x");
        sizer.observe(80 * MS);
        assert_eq!(sizer.next(1000), 2500, "80 ms for a 100 ms target: x1.25");
        sizer.observe(1000 * MS);
        assert_eq!(sizer.next(1000), 1250, "10x too slow: halved");
        sizer.observe(100 * MS);
        assert_eq!(sizer.next(1000), 1250, "on target: kept");
    }

    #[test]
    fn sizes_stay_within_gh_osts_bounds() {
        let mut big = ChunkSizer::new(Some(100 * MS), 90_000);
        big.observe(MS);
        assert_eq!(big.current(), MAX_CHUNK);
        let mut small = ChunkSizer::new(Some(10 * MS), 12);
        small.observe(1000 * MS);
        assert_eq!(small.current(), MIN_CHUNK);
    }

    #[test]
    fn lock_waits_halve_adaptive_chunks_only() {
        let mut adaptive = ChunkSizer::new(Some(100 * MS), 1000);
        adaptive.back_off();
        assert_eq!(adaptive.next(1000), 500);
        let mut fixed = ChunkSizer::new(None, 1000);
        fixed.back_off();
        assert_eq!(fixed.next(1000), 1000);
    }

    #[test]
    fn a_new_chunk_size_control_restarts_from_it() {
        let mut sizer = ChunkSizer::new(Some(100 * MS), 1000);
        sizer.observe(10 * MS);
        assert_eq!(sizer.next(1000), 2000);
        assert_eq!(sizer.next(500), 500, "the user's new size wins");
        sizer.observe(10 * MS);
        assert_eq!(sizer.next(500), 1000);
    }
}
