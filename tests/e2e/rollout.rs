//! `ledgerhost plugin diff`: two versions of a plugin fed the same events offline, their
//! dispositions and writes compared event by event (issue 26's offline half). Over recorded
//! events here; over an archive partly compacted by the janitor from the restore test
//! (`restore::a_restore_equals_the_source_now_and_at_each_kept_instant`), which builds one.

use std::path::{Path, PathBuf};
use std::process::Command;

use ledgerhost_tests::harness::{plugin_manifest, plugin_wasm};

const HOST_BIN: &str = env!("CARGO_BIN_EXE_ledgerhost-under-test");

/// The example filter's manifest as shipped (threshold 1 000) under `dir/old/`, and with
/// `threshold` under `dir/new/`: the two versions (one component, configured apart).
fn filter_versions(dir: &Path, threshold: &str) -> (PathBuf, PathBuf) {
    let shipped = std::fs::read_to_string(plugin_manifest("filter")).expect("filter manifest");
    let changed = shipped.replace(
        "threshold = \"1000\"",
        &format!("threshold = \"{threshold}\""),
    );
    assert_ne!(shipped, changed, "the shipped manifest sets the threshold");
    let mut out = Vec::new();
    for (side, text) in [("old", shipped), ("new", changed)] {
        let d = dir.join(side);
        std::fs::create_dir_all(&d).expect("create dir");
        let m = d.join("filter.toml");
        std::fs::write(&m, text).expect("write manifest");
        out.push(m);
    }
    (out.remove(0), out.remove(0))
}

/// Runs `ledgerhost plugin diff` of the filter with manifests `old` and `new` and `args`;
/// returns the exit code, the JSON report (when printed) and stderr.
fn plugin_diff(old: &Path, new: &Path, args: &[&str]) -> (i32, serde_json::Value, String) {
    let wasm = plugin_wasm("filter");
    let out = Command::new(HOST_BIN)
        .args(["plugin", "diff"])
        .arg(&wasm)
        .arg(&wasm)
        .arg("--old-manifest")
        .arg(old)
        .arg("--new-manifest")
        .arg(new)
        .arg("--json")
        .args(args)
        .output()
        .expect("run ledgerhost plugin diff");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.code().unwrap_or(-1),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The ids of the differing events of a report.
fn differing(report: &serde_json::Value) -> Vec<String> {
    report["differences"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| d["event"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn plugin_diff_over_recorded_events_names_exactly_the_events_handled_differently() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (old, new) = filter_versions(dir.path(), "500");
    let events = dir.path().join("events.json");
    let amounts = [100, 499, 500, 999, 1000, 2500];
    let lines: String = amounts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            format!(
                "{{\"table\":\"orders\",\"key\":[\"id\"],\"commit_ts\":{},\"row\":{{\"id\":{},\
                 \"client_id\":\"c\",\"amount\":{a}}}}}\n",
                100 + i,
                i + 1
            )
        })
        .collect();
    std::fs::write(&events, lines).expect("write events");
    let events_arg = events.display().to_string();

    let (code, report, stderr) = plugin_diff(&old, &new, &["--events", &events_arg]);
    assert_eq!(code, 1, "they differ: {report:#}\n{stderr}");
    assert_eq!(report["events"], 6);
    assert_eq!(report["equal"], 4);
    // 500 and 999: the new threshold publishes them, the old one does not.
    assert_eq!(differing(&report), ["orders/3/102", "orders/4/103"]);
    let d = &report["differences"][0];
    assert_eq!(
        d["old"]["effects"].as_array().map(Vec::len),
        Some(0),
        "{d:#}"
    );
    assert_eq!(d["new"]["effects"][0]["kind"], "publish", "{d:#}");
    assert_eq!(
        d["new"]["effects"][0]["topic"], "orders-high-value",
        "{d:#}"
    );
    assert!(
        d["first"].as_str().is_some_and(
            |f| f.starts_with("write 1 of 1: old nothing; new publish orders-high-value")
        ),
        "{d:#}"
    );

    // A version against itself: equal, exit 0; the human report says so.
    let (code, report, stderr) = plugin_diff(&old, &old, &["--events", &events_arg]);
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_eq!(report["equal"], 6);
    assert_eq!(report["differing"], 0);

    // No events to read: an error, exit 2, naming what.
    let (code, _, stderr) = plugin_diff(&old, &new, &["--events", "/nonexistent/events.json"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("/nonexistent/events.json"), "{stderr}");
}

/// `plugin diff` of the filter at threshold 1 000 and at 30 over the archive the restore
/// test built (63 versions of `orders`, 44 of them in the janitor's compacted file, 19
/// loose): every version fed once, in commit order; exactly the 28 with an amount of 30 or
/// more differ, each published by the new version only.
pub(super) fn assert_diff_over_archive(config: &Path, work: &Path) {
    let (old, new) = filter_versions(work, "30");
    let config = config.display().to_string();
    let archive = [
        "--config",
        &config,
        "--table",
        "orders",
        "--max-differences",
        "100",
    ];
    let (code, report, stderr) = plugin_diff(&old, &new, &archive);
    assert_eq!(code, 1, "{report:#}\n{stderr}");
    assert_eq!(report["events"], 63, "{report:#}");
    assert_eq!(report["differing"], 28, "{report:#}");
    for d in report["differences"].as_array().into_iter().flatten() {
        assert_eq!(
            d["old"]["effects"].as_array().map(Vec::len),
            Some(0),
            "{d:#}"
        );
        assert_eq!(d["new"]["effects"][0]["kind"], "publish", "{d:#}");
    }
    // In commit order: the differing events' commit timestamps never go back.
    let times: Vec<i64> = differing(&report)
        .iter()
        .map(|id| {
            id.rsplit('/')
                .next()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0)
        })
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let old_diff = differing(&report);
    let (code, report, stderr) = plugin_diff(&old, &old, &archive);
    assert_eq!(
        (code, &report["equal"]),
        (0, &serde_json::json!(63)),
        "{stderr}"
    );
    // The same versions over what the host's embedded ledger retains: the same verdict.
    let mut ledger = archive.to_vec();
    ledger.push("--from-ledger");
    let (code, report, stderr) = plugin_diff(&old, &new, &ledger);
    assert_eq!(code, 1, "{report:#}\n{stderr}");
    assert_eq!(report["events"], 63, "{report:#}");
    assert_eq!(
        differing(&report),
        old_diff,
        "the ledger's retained messages give the archive's verdict"
    );
}
