//! Figures over the rounds: the median, and the median with its spread.

/// The median of some numbers (0 for none).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// The median of a figure with its spread over the rounds: `m (min–max)`,
/// or `m` alone from one round.
pub(crate) fn med_spread<S>(v: &[S], f: impl Fn(&S) -> f64, fmt: impl Fn(f64) -> String) -> String {
    let xs: Vec<f64> = v.iter().map(&f).collect();
    let m = fmt(median(xs.clone()));
    if xs.len() < 2 {
        return m;
    }
    let (lo, hi) = xs.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    format!("{m} ({}–{})", fmt(lo), fmt(hi))
}
