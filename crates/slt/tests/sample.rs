//! Runs the CI sample of the sqllogictest corpus (`testdata/`) and holds it to the targets of
//! `docs/sqllogictest.md`: every non-skipped evidence record passes, the random and index
//! samples pass at 99.5% or better, one-shot and maintained alike.

use std::path::Path;
use std::time::Duration;

use viewcast_slt::{collect_files, run_file, Counts, Options};

fn run(folder: &str) -> (Counts, Counts, Vec<String>, Vec<String>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata").join(folder);
    let files = collect_files(&root);
    assert!(!files.is_empty(), "no files under {}", root.display());
    let opts = Options { file_timeout: Duration::from_secs(120), ..Options::default() };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (mut one_shot, mut maintained, mut failures, mut wrong) =
        (Counts::default(), Counts::default(), Vec::new(), Vec::new());
    for file in files {
        let report = runtime.block_on(run_file(&file, &opts));
        one_shot.add(report.one_shot);
        maintained.add(report.maintained);
        failures.extend(report.failures.iter().map(|f| format!("{} {:?} {}: {}", f.location, f.mode, f.class, f.sql)));
        wrong.extend(report.wrong_for_engine.iter().map(|(location, _)| location.clone()));
    }
    (one_shot, maintained, failures, wrong)
}

#[test]
fn evidence_passes_every_record_postgres_accepts() {
    let (one_shot, maintained, failures, wrong) = run("evidence");
    assert!(failures.is_empty(), "one-shot {one_shot:?} maintained {maintained:?}: {failures:#?}");
    assert!(one_shot.run > 200 && maintained.run > 100, "{one_shot:?} {maintained:?}");
    // Exactly the two records Postgres rejects (bit-string constants compared with integers) are
    // set aside, and only those: the list cannot silently grow to hide a failure.
    let wrong: Vec<&str> = wrong.iter().map(|l| l.rsplit('/').next().unwrap_or(l)).collect();
    assert_eq!(wrong, ["in1.test:313", "in1.test:324"], "records skipped as wrong for postgresql");
}

#[test]
fn random_and_index_samples_meet_the_targets() {
    for folder in ["random", "index"] {
        let (one_shot, maintained, failures, _) = run(folder);
        for (mode, c) in [("one-shot", one_shot), ("maintained", maintained)] {
            assert!(c.run > 500, "{folder} {mode}: only {c:?}");
            assert!(c.rate() >= 99.5, "{folder} {mode}: {c:?} ({:.2}%); failures: {failures:#?}", c.rate());
        }
    }
}
