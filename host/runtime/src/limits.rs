//! Per-instance resource limits: a memory cap that remembers it was hit (so the trap that
//! follows is reported as out-of-memory) and a high-water mark for metrics.

/// Caps every linear memory of one instance.
#[derive(Debug)]
pub struct MemoryLimiter {
    cap_bytes: usize,
    /// Largest memory size granted so far.
    pub high_water: usize,
    /// Set when a growth beyond the cap was refused during the current call.
    pub denied: bool,
}

impl MemoryLimiter {
    /// A limiter allowing `cap_bytes` per memory.
    pub fn new(cap_bytes: usize) -> Self {
        MemoryLimiter {
            cap_bytes,
            high_water: 0,
            denied: false,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap_bytes {
            self.denied = true;
            return Ok(false);
        }
        self.high_water = self.high_water.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}
