//! Size-based rotation of the file sink: no line is lost, split or
//! duplicated across files, files respect the size limit, and retention
//! keeps only the newest rotated files.

mod support;

use std::path::{Path, PathBuf};

use fapilog::sink::FileSink;
use support::start;

const MAX_BYTES: u64 = 2048;

/// Logs seq 0..n through a file sink at `dir/app.log` and shuts down.
fn log_to_file(dir: &Path, n: u64, keep: usize) {
    let file = FileSink::builder(dir.join("app.log"))
        .max_bytes(MAX_BYTES)
        .keep(keep);
    let (dispatch, guard) = start(fapilog::builder().file(file));
    tracing::dispatcher::with_default(&dispatch, || {
        for seq in 0..n {
            tracing::info!(
                seq,
                payload = "some text to make the line longer",
                "written"
            );
        }
    });
    let report = guard.shutdown_blocking();
    assert_eq!(report.dropped, 0, "{report:?}");
    assert_eq!(report.emitted, n, "{report:?}");
    assert_eq!(report.sink_failures, 0, "{report:?}");
}

/// The log files in `dir`, oldest first: rotated files in the order of the
/// (timestamp, collision number) in their names, then the active file.
fn files_oldest_first(dir: &Path) -> Vec<PathBuf> {
    let mut rotated = Vec::new();
    let mut active = None;
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name == "app.log" {
            active = Some(dir.join(&name));
            continue;
        }
        let rest = name
            .strip_prefix("app.log.")
            .unwrap_or_else(|| panic!("unexpected file {name}"));
        let (stamp, n) = match rest.get(22..) {
            Some("") => (rest, 0),
            Some(suffix) => (&rest[..22], suffix[1..].parse::<u64>().unwrap()),
            None => panic!("rotated file {name} has no timestamp"),
        };
        rotated.push(((stamp.to_owned(), n), dir.join(&name)));
    }
    rotated.sort();
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    files.push(active.expect("the active file exists"));
    files
}

/// Every line of every file parsed; returns the seq numbers in file order.
fn read_seqs(files: &[PathBuf]) -> Vec<u64> {
    let mut seqs = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path).unwrap();
        let size = text.len() as u64;
        assert!(
            size <= MAX_BYTES,
            "{} is {size} bytes, over the {MAX_BYTES} limit",
            path.display()
        );
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{} ends mid-line",
            path.display()
        );
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: broken line {line:?}: {e}", path.display()));
            assert_eq!(v["message"], "written", "{line}");
            let seq = v["fields"]["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("no seq in {line}"));
            seqs.push(seq);
        }
    }
    seqs
}

#[test]
fn size_rotation_loses_splits_and_duplicates_nothing() {
    const N: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    log_to_file(dir.path(), N, 100_000);

    let files = files_oldest_first(dir.path());
    assert!(
        files.len() > 50,
        "expected many rotations, got {} files",
        files.len()
    );
    let seqs = read_seqs(&files);
    // Oldest file first, each file in order: the sequence reads 0..N.
    assert_eq!(seqs, (0..N).collect::<Vec<_>>());
}

#[test]
fn retention_keeps_only_the_newest_rotated_files() {
    const N: u64 = 1_000;
    let dir = tempfile::tempdir().unwrap();
    log_to_file(dir.path(), N, 2);

    let files = files_oldest_first(dir.path());
    let rotated = files.len() - 1;
    assert_eq!(rotated, 2, "kept rotated files: {files:?}");
    let seqs = read_seqs(&files);
    assert!(!seqs.is_empty());
    // What survives is the newest part of the stream, without gaps.
    let first = N - seqs.len() as u64;
    assert!(first > 0, "old files were pruned");
    assert_eq!(seqs, (first..N).collect::<Vec<_>>());
}

#[test]
fn a_line_longer_than_the_limit_gets_a_file_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let huge = "x".repeat(3 * MAX_BYTES as usize);
    let file = FileSink::builder(dir.path().join("app.log"))
        .max_bytes(MAX_BYTES)
        .keep(100);
    let (dispatch, guard) = start(fapilog::builder().file(file));
    tracing::dispatcher::with_default(&dispatch, || {
        for seq in 0..30u64 {
            if seq == 15 {
                tracing::info!(seq, payload = huge.as_str(), "written");
            } else {
                tracing::info!(seq, "written");
            }
        }
    });
    let report = guard.shutdown_blocking();
    assert_eq!(report.sink_failures, 0, "{report:?}");

    let files = files_oldest_first(dir.path());
    let mut seqs = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("intact JSON line"))
            .collect();
        if lines
            .iter()
            .any(|v| v["fields"]["payload"] == huge.as_str())
        {
            assert_eq!(
                lines.len(),
                1,
                "the oversize line shares {}",
                path.display()
            );
        } else {
            assert!(text.len() as u64 <= MAX_BYTES, "{} too big", path.display());
        }
        seqs.extend(lines.iter().map(|v| v["fields"]["seq"].as_u64().unwrap()));
    }
    assert_eq!(seqs, (0..30).collect::<Vec<_>>());
}

/// Retention that cannot delete an old file (here: a directory under a
/// rotated file's name) loses no lines: rotation goes on, every line is
/// written once, and the failure costs nothing but the undeleted file.
#[test]
fn a_retention_failure_loses_no_lines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("app.log.20000101T000000.000000")).unwrap();
    let n = 500;
    let file = FileSink::builder(dir.path().join("app.log"))
        .max_bytes(MAX_BYTES)
        .keep(1);
    let (dispatch, guard) = start(fapilog::builder().file(file));
    tracing::dispatcher::with_default(&dispatch, || {
        for seq in 0..n {
            tracing::info!(
                seq,
                payload = "some text to make the line longer",
                "written"
            );
        }
    });
    let report = guard.shutdown_blocking();
    assert_eq!((report.emitted, report.dropped), (n, 0));
    std::fs::remove_dir(dir.path().join("app.log.20000101T000000.000000")).unwrap();
    let files = files_oldest_first(dir.path());
    assert_eq!(
        files.len(),
        2,
        "the other old files were still pruned: {files:?}"
    );
    let seqs = read_seqs(&files);
    // keep(1): only the newest rotated file and the active one remain, and
    // they hold the newest lines, consecutive and ending with the last.
    assert!(!seqs.is_empty());
    assert_eq!(*seqs.last().unwrap(), n - 1);
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "gap or repeat: {seqs:?}"
    );
}
