//! Golden tests of the desired objects: each `testdata/cluster/<case>.input.yaml` is a
//! KafkaCluster, `<case>.golden.yaml` the objects the operator must create for it.
//!
//! After an intended change, rewrite the golden files with
//! `UPDATE_GOLDEN=1 cargo test -p strom-operator --test golden` and review the diff.

use std::path::{Path, PathBuf};

use strom_operator::cluster::desired::{desired, Defaults};
use strom_operator::crd::KafkaCluster;

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/cluster");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("testdata/cluster exists")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.to_string_lossy().ends_with(".input.yaml"))
        .collect();
    inputs.sort();
    inputs
}

fn defaults() -> Defaults {
    Defaults {
        image: "strom:0.1.0".to_owned(),
    }
}

#[test]
fn desired_objects_match_golden_files() {
    let cases = cases();
    assert!(
        cases.len() >= 4,
        "expected the golden cases, found {cases:?}"
    );
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for input in cases {
        let text = std::fs::read_to_string(&input).expect("readable input");
        let cluster: KafkaCluster =
            serde_yaml::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", input.display()));
        let actual = desired(&cluster, &defaults())
            .expect("desired objects")
            .to_yaml()
            .expect("YAML");
        let golden = PathBuf::from(
            input
                .to_string_lossy()
                .replace(".input.yaml", ".golden.yaml"),
        );
        if update {
            std::fs::write(&golden, &actual).expect("writable golden file");
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        if expected != actual {
            mismatches.push(golden.display().to_string());
            eprintln!("--- {} differs; actual:\n{actual}", golden.display());
        }
    }
    assert!(
        mismatches.is_empty(),
        "golden files differ (UPDATE_GOLDEN=1 rewrites them): {mismatches:?}"
    );
}

#[test]
fn desired_objects_are_deterministic() {
    for input in cases() {
        let cluster: KafkaCluster =
            serde_yaml::from_str(&std::fs::read_to_string(&input).unwrap()).unwrap();
        assert_eq!(
            desired(&cluster, &defaults()).unwrap(),
            desired(&cluster, &defaults()).unwrap()
        );
    }
}
