//! Rates and latency percentiles, and how they are printed.

use std::time::Duration;

/// How many operations completed in how long.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Completed operations.
    pub count: u64,
    /// From the first start to the last completion.
    pub elapsed: Duration,
}

impl Throughput {
    /// Operations per second.
    pub fn per_second(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// A set of latency samples.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    sorted: Vec<Duration>,
}

impl Latencies {
    /// The samples, in any order.
    pub fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Self { sorted: samples }
    }

    /// The `p`-th percentile (0 < p <= 100) by nearest rank; zero without samples.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = (p / 100.0 * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }

    /// How many samples there are.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The median.
    pub fn median(&self) -> Duration {
        self.percentile(50.0)
    }
}

/// `31.2 ms`.
pub fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// `94.3 %`.
pub fn percent(ratio: f64) -> String {
    format!("{:.1} %", ratio * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let latencies = Latencies::new((1..=100).rev().map(ms).collect());

        assert_eq!(latencies.median(), ms(50));
        assert_eq!(latencies.percentile(99.0), ms(99));
        assert_eq!(latencies.percentile(100.0), ms(100));
        assert_eq!(Latencies::new(vec![ms(7)]).percentile(99.0), ms(7));
        assert_eq!(Latencies::default().median(), Duration::ZERO);
    }

    #[test]
    fn a_rate_is_operations_over_elapsed_time() {
        let throughput = Throughput {
            count: 150,
            elapsed: Duration::from_secs(10),
        };

        assert!((throughput.per_second() - 15.0).abs() < 1e-9);
    }
}
