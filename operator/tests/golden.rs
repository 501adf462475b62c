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

/// Runs each StatefulSet's container script with `/bin/sh`, as a pod would, for every
/// ordinal, with `strom-broker` replaced by `printf`, and checks the node id and rack it
/// derives against the layout: the id formula as the pods really compute it.
#[test]
fn pod_scripts_derive_the_layout_ids_from_pod_names() {
    use strom_operator::cluster::layout::Layout;

    let input =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/cluster/three-racks.input.yaml");
    let cluster: KafkaCluster =
        serde_yaml::from_str(&std::fs::read_to_string(input).unwrap()).unwrap();
    let objects = desired(&cluster, &defaults()).unwrap();
    let layout = Layout::of(&cluster);
    let mut expected: Vec<(String, String)> = layout
        .brokers()
        .into_iter()
        .map(|b| (b.pod, format!("node.id={}", b.id)))
        .chain(
            layout
                .controllers
                .iter()
                .map(|c| (c.pod.clone(), format!("node.id={}", c.id))),
        )
        .collect();
    expected.sort();

    let mut seen = Vec::new();
    for set in objects
        .broker_sets
        .iter()
        .chain(objects.controller_set.as_ref())
    {
        let name = set.metadata.name.clone().unwrap();
        let spec = set.spec.as_ref().unwrap();
        let container = &spec.template.spec.as_ref().unwrap().containers[0];
        let command = container.command.as_ref().unwrap();
        assert_eq!(&command[..2], ["/bin/sh", "-c"]);
        let script = command[2].replace("/usr/local/bin/strom-broker", "printf '%s\\n'");
        for ordinal in 0..spec.replicas.unwrap() {
            let pod = format!("{name}-{ordinal}");
            let mut sh = std::process::Command::new("/bin/sh");
            sh.arg("-c").arg(&script).env_clear();
            for var in container.env.as_ref().unwrap() {
                if let Some(value) = &var.value {
                    sh.env(&var.name, value);
                }
            }
            // What the downward API fills in.
            sh.env("POD_NAME", &pod).env("POD_NAMESPACE", "streaming");
            let output = sh.output().expect("/bin/sh runs");
            assert!(output.status.success(), "{pod}: {output:?}");
            let args = String::from_utf8(output.stdout).unwrap();
            let node_id = args.lines().find(|a| a.starts_with("node.id=")).unwrap();
            seen.push((pod.clone(), node_id.to_owned()));
            if name.contains("-broker-") {
                let rack = args
                    .lines()
                    .find(|a| a.starts_with("broker.rack="))
                    .unwrap();
                let expected_rack = layout
                    .brokers()
                    .into_iter()
                    .find(|b| b.pod == pod)
                    .and_then(|b| b.rack)
                    .unwrap();
                assert_eq!(rack, format!("broker.rack={expected_rack}"));
                assert!(args.contains(&format!(
                    "advertised.listeners=PLAINTEXT://{pod}.events-headless.streaming.svc:9092"
                )));
            }
        }
    }
    seen.sort();
    assert_eq!(seen, expected);
}
