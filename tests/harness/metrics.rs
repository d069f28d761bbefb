//! Reading a host's `/metrics` in tests.

use std::collections::BTreeMap;

/// Every sample of an exposition: (name, labels) → value.
pub type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// The samples of a Prometheus text exposition (no timestamps, as the host writes it).
pub fn parse(text: &str) -> Samples {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let labels = rest
                    .trim_end_matches('}')
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once("=\"").expect("label");
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        out.insert((name, labels), value.parse().expect("sample value"));
    }
    out
}

/// One sample's value (0 when absent).
pub fn sample(metrics: &Samples, name: &str, labels: &[(&str, &str)]) -> u64 {
    metrics
        .iter()
        .find(|((n, l), _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map_or(0, |(_, v)| *v as u64)
}
