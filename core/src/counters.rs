//! Counters declared once: the `counters!` table macro, and what it says
//! about each figure ([`CounterInfo`]). `stats.rs` (the server's figures)
//! and `datagram/stats.rs` (the UDP side's) each hold one table.

/// Whether a figure only grows (a counter) or goes up and down (a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterKind {
    /// Only grows; its metric name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// How the periodic stats line (`switchboard-server --stats-every`) shows
/// a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineForm {
    /// The figure now: `closed 3`.
    Total,
    /// Its rate over the period: `frames 120/s`, `in 4096 B/s`.
    Rate,
    /// Both: `accepted 7 (+2/s)`.
    TotalAndRate,
}

/// One figure of a stats snapshot ([`Stats`](crate::Stats),
/// [`DatagramStats`](crate::datagram::DatagramStats)) and the names every
/// output gives it, from the table that declares it (`COUNTERS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CounterInfo {
    /// The field of the snapshot (and of [`WorkerStats`](crate::WorkerStats)
    /// when [`per_worker`](CounterInfo::per_worker)): also its key in JSON
    /// and in the test kit's `key=value` form.
    pub name: &'static str,
    /// Its word in the snapshot's `Display` and in the stats line: `frame-errors`.
    pub label: &'static str,
    /// Its unit after the figure, `B` for bytes, or empty.
    pub unit: &'static str,
    /// How the stats line shows it.
    pub line: LineForm,
    /// Its Prometheus metric name.
    pub metric: &'static str,
    /// Counter or gauge.
    pub kind: CounterKind,
    /// Kept per worker ([`WorkerStats`](crate::WorkerStats)); the metric
    /// has one sample per worker, labelled `worker="N"`.
    pub per_worker: bool,
    /// The metric's help text.
    pub help: &'static str,
}

/// A figure's value as a `u64`, whatever its type.
pub(crate) trait Figure: Copy {
    fn to_u64(self) -> u64;
    fn from_u64(n: u64) -> Self;
}

impl Figure for u64 {
    fn to_u64(self) -> u64 {
        self
    }
    fn from_u64(n: u64) -> u64 {
        n
    }
}

impl Figure for usize {
    fn to_u64(self) -> u64 {
        self as u64
    }
    fn from_u64(n: u64) -> usize {
        usize::try_from(n).unwrap_or(usize::MAX)
    }
}

/// A table of counters: each line declares a figure of a snapshot type
/// once, with where it is kept, its word in `Display` and the stats line,
/// its Prometheus name, kind and help, and whether it is kept per worker.
/// From it come the snapshot type, its `get`/`set` by name, `Display`,
/// `COUNTERS` (a [`CounterInfo`] per line, in table order) and the
/// snapshot method of the live counters; with a `per worker` header also
/// the per-worker share type and the live per-worker counters' `share`.
///
/// `= (where)`: `acquire F` (`F` of the live counters, read with
/// `Acquire`), `shared F` (`F` of the live counters), `workers F` (the sum
/// of every worker's `F`), `both F` (`F` plus that sum), `queued` (the
/// live counters' `queued()`). `per_worker` or `total`: whether the
/// per-worker share has it. Fields are read in table order.
macro_rules! counters {
    (
        $(#[$meta:meta])*
        pub struct $stats:ident from $live:ident, shown as $prefix:literal
            $(, per worker: $(#[$wmeta:meta])* pub struct $wstats:ident from $wlive:ident)?;
        $(
            $(#[doc = $doc:literal])*
            $name:ident: $ty:ty = ($($read:tt)*),
                $label:literal $unit:literal $line:ident,
                $metric:literal $kind:ident $shape:ident,
                $help:literal;
        )*
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct $stats {
            $( $(#[doc = $doc])* pub $name: $ty, )*
        }

        impl $stats {
            /// Every figure, in the order `Display` shows them.
            pub const COUNTERS: &'static [$crate::counters::CounterInfo] = &[$(
                $crate::counters::CounterInfo {
                    name: stringify!($name),
                    label: $label,
                    unit: $unit,
                    line: $crate::counters::LineForm::$line,
                    metric: $metric,
                    kind: $crate::counters::CounterKind::$kind,
                    per_worker: counters!(@per_worker $shape),
                    help: $help,
                },
            )*];

            /// The figure named `name` (a [`CounterInfo::name`](crate::CounterInfo::name)).
            pub fn get(&self, name: &str) -> Option<u64> {
                match name {
                    $( stringify!($name) => Some($crate::counters::Figure::to_u64(self.$name)), )*
                    _ => None,
                }
            }

            /// Sets the figure named `name`; false if there is none.
            pub fn set(&mut self, name: &str, value: u64) -> bool {
                match name {
                    $( stringify!($name) => self.$name = $crate::counters::Figure::from_u64(value), )*
                    _ => return false,
                }
                true
            }
        }

        impl std::fmt::Display for $stats {
            /// Every figure by its label, with its unit, in table order.
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($prefix)?;
                for (i, c) in $stats::COUNTERS.iter().enumerate() {
                    let sep = if i == 0 { "" } else { " " };
                    let value = self.get(c.name).unwrap_or_default();
                    match c.unit {
                        "" => write!(f, "{sep}{} {value}", c.label)?,
                        unit => write!(f, "{sep}{} {value} {unit}", c.label)?,
                    }
                }
                Ok(())
            }
        }

        impl $live {
            /// A snapshot of the figures now, read in table order.
            pub(crate) fn snapshot(&self) -> $stats {
                $stats { $( $name: counters!(@read self, $($read)*), )* }
            }
        }

        counters!(@worker w [$( $(#[$wmeta])* $wstats $wlive )?] [] [] []
            $( $shape [$(#[doc = $doc])*] $name $ty = ($($read)*); )*);
    };

    (@per_worker per_worker) => { true };
    (@per_worker total) => { false };

    (@read $c:ident, acquire $f:ident) => { $c.$f.load(std::sync::atomic::Ordering::Acquire) };
    (@read $c:ident, shared $f:ident) => { $c.$f.load(std::sync::atomic::Ordering::Relaxed) };
    (@read $c:ident, workers $f:ident) => {
        $c.workers.iter().map(|w| w.$f.load(std::sync::atomic::Ordering::Relaxed)).sum()
    };
    (@read $c:ident, both $f:ident) => {
        $c.$f.load(std::sync::atomic::Ordering::Relaxed)
            + $c.workers.iter().map(|w| w.$f.load(std::sync::atomic::Ordering::Relaxed)).sum::<u64>()
    };
    (@read $c:ident, queued) => { $c.queued() };

    // One worker's share: only what the worker keeps.
    (@wread $w:ident, workers $f:ident) => { $w.$f.load(std::sync::atomic::Ordering::Relaxed) };
    (@wread $w:ident, both $f:ident) => { $w.$f.load(std::sync::atomic::Ordering::Relaxed) };
    (@wread $w:ident, queued) => { $w.queued.load(std::sync::atomic::Ordering::Relaxed) };

    // The per-worker share: the per_worker lines, gathered one by one.
    (@worker $w:ident [$($head:tt)*] [$($fields:tt)*] [$($reads:tt)*] [$($names:ident)*]
        per_worker [$($doc:tt)*] $name:ident $ty:ty = ($($read:tt)*); $($rest:tt)*) => {
        counters!(@worker $w [$($head)*]
            [$($fields)* $($doc)* pub $name: $ty,]
            [$($reads)* $name: counters!(@wread $w, $($read)*),]
            [$($names)* $name]
            $($rest)*);
    };
    (@worker $w:ident [$($head:tt)*] [$($fields:tt)*] [$($reads:tt)*] [$($names:ident)*]
        total [$($doc:tt)*] $name:ident $ty:ty = ($($read:tt)*); $($rest:tt)*) => {
        counters!(@worker $w [$($head)*] [$($fields)*] [$($reads)*] [$($names)*] $($rest)*);
    };
    // No per-worker header: no share type.
    (@worker $w:ident [] [$($fields:tt)*] [$($reads:tt)*] [$($names:ident)*]) => {};
    (@worker $w:ident [$(#[$wmeta:meta])* $wstats:ident $wlive:ident]
        [$($fields:tt)*] [$($reads:tt)*] [$($names:ident)*]) => {
        $(#[$wmeta])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct $wstats {
            $($fields)*
        }

        impl $wstats {
            /// The figure named `name`, if it is kept per worker.
            pub fn get(&self, name: &str) -> Option<u64> {
                let $w = self;
                match name {
                    $( stringify!($names) => Some($crate::counters::Figure::to_u64($w.$names)), )*
                    _ => None,
                }
            }

            /// Sets the figure named `name`; false if it is not kept per worker.
            pub fn set(&mut self, name: &str, value: u64) -> bool {
                let $w = self;
                match name {
                    $( stringify!($names) => $w.$names = $crate::counters::Figure::from_u64(value), )*
                    _ => return false,
                }
                true
            }
        }

        impl $wlive {
            /// This worker's share now.
            pub(crate) fn share(&self) -> $wstats {
                let $w = self;
                $wstats { $($reads)* }
            }
        }
    };
}
