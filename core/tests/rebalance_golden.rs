//! Golden tests of rebalance planning, in the format of the placement golden tests: each
//! file in `core/testdata/rebalance/` lists cases, each a command line, a `----` line and
//! the expected output up to a blank line; `#` lines are comments. The test compares the
//! current output with the files, or rewrites the outputs when `STROM_BLESS=1` is set
//! (review the diff before committing it: a changed golden file is a changed plan).
//!
//! Commands:
//! - `plan brokers=1:a,2:b,3 assign=t/0:1,2;t/1-3:2,3 [sizes=t/0:5000;t/1-3:10]
//!   [offline=3] [drain=1] [rf=t:3,u:1] [balance=no]`: brokers as `id:rack` (a bare id has
//!   no rack); partitions as `topic/partition:replicas` or `topic/first-last:replicas` for a
//!   range with the same replicas, `;`-separated; sizes default to 1000 bytes; Balance is on
//!   unless `balance=no`. Prints each changed partition (`t/0 1,2 -> 3,2 +1000` with the
//!   bytes to move), or `no changes`, then the measures table.
//! - `json` with the same arguments: the plan as kafka-reassign-partitions JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use strom_core::rebalance::{plan, Broker, Goals, PartitionAssignment, Plan};
use strom_core::BrokerId;

const SEPARATOR: &str = "----";
const DEFAULT_SIZE: u64 = 1000;

fn id(s: &str) -> BrokerId {
    s.parse().unwrap_or_else(|_| panic!("bad broker id {s:?}"))
}

fn ids(list: &str) -> Vec<BrokerId> {
    if list.is_empty() {
        return Vec::new();
    }
    list.split(',').map(id).collect()
}

/// `topic/0` or `topic/0-11`: the topic and the partitions it names.
fn partitions(spec: &str) -> (String, std::ops::RangeInclusive<i32>) {
    let (topic, range) = spec
        .rsplit_once('/')
        .unwrap_or_else(|| panic!("{spec:?} is not topic/partition"));
    let num = |s: &str| -> i32 {
        s.parse()
            .unwrap_or_else(|_| panic!("bad partition {s:?} in {spec:?}"))
    };
    let range = match range.split_once('-') {
        Some((first, last)) => num(first)..=num(last),
        None => num(range)..=num(range),
    };
    (topic.to_owned(), range)
}

/// `spec:value;spec:value`, each spec naming partitions, as one entry per partition.
fn per_partition(list: &str) -> Vec<((String, i32), &str)> {
    let mut out = Vec::new();
    for item in list.split(';').filter(|s| !s.is_empty()) {
        let (spec, value) = item
            .split_once(':')
            .unwrap_or_else(|| panic!("{item:?} is not partitions:value"));
        let (topic, range) = partitions(spec);
        out.extend(range.map(|p| ((topic.clone(), p), value)));
    }
    out
}

/// Parses `key=value` arguments; every key a command reads must be present unless it has a
/// default, and unknown keys are refused so that a typo cannot silently change a case.
struct Args(BTreeMap<String, String>);

impl Args {
    fn parse(words: &[&str], allowed: &[&str]) -> Args {
        let mut map = BTreeMap::new();
        for w in words {
            let (k, v) = w
                .split_once('=')
                .unwrap_or_else(|| panic!("argument {w:?} is not key=value"));
            assert!(allowed.contains(&k), "unknown argument {k:?}");
            map.insert(k.to_owned(), v.to_owned());
        }
        Args(map)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn brokers(&self) -> Vec<Broker> {
        let offline = ids(self.get("offline").unwrap_or(""));
        let list = self.get("brokers").expect("missing brokers=");
        list.split(',')
            .map(|b| {
                let (broker, rack) = match b.split_once(':') {
                    Some((broker, rack)) => (id(broker), Some(rack.to_owned())),
                    None => (id(b), None),
                };
                Broker {
                    id: broker,
                    rack,
                    online: !offline.contains(&broker),
                }
            })
            .collect()
    }

    fn partitions(&self) -> Vec<PartitionAssignment> {
        let sizes: BTreeMap<(String, i32), u64> = per_partition(self.get("sizes").unwrap_or(""))
            .into_iter()
            .map(|(p, v)| (p, v.parse().unwrap_or_else(|_| panic!("bad size {v:?}"))))
            .collect();
        let assign = per_partition(self.get("assign").expect("missing assign="));
        for p in sizes.keys() {
            assert!(
                assign.iter().any(|(q, _)| q == p),
                "sizes= names {p:?}, which assign= does not"
            );
        }
        assign
            .into_iter()
            .map(|((topic, partition), replicas)| PartitionAssignment {
                size: sizes
                    .get(&(topic.clone(), partition))
                    .copied()
                    .unwrap_or(DEFAULT_SIZE),
                topic,
                partition,
                replicas: ids(replicas),
            })
            .collect()
    }

    fn goals(&self) -> Goals {
        let mut goals = Goals {
            balance: match self.get("balance") {
                None | Some("yes") => true,
                Some("no") => false,
                Some(v) => panic!("balance={v} is neither yes nor no"),
            },
            drain: ids(self.get("drain").unwrap_or("")).into_iter().collect(),
            ..Goals::default()
        };
        for item in self
            .get("rf")
            .unwrap_or("")
            .split(',')
            .filter(|s| !s.is_empty())
        {
            let (topic, rf) = item
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("{item:?} is not topic:rf"));
            let rf = rf.parse().unwrap_or_else(|_| panic!("bad rf {rf:?}"));
            goals.replication_factors.insert(topic.to_owned(), rf);
        }
        goals
    }

    /// The plan, after checking that it does not depend on the order of the input.
    fn plan(&self) -> Result<Plan, String> {
        let (brokers, partitions, goals) = (self.brokers(), self.partitions(), self.goals());
        let got = plan(&brokers, &partitions, &goals).map_err(|e| e.to_string());
        let (mut b, mut p) = (brokers.clone(), partitions.clone());
        b.reverse();
        p.reverse();
        assert_eq!(
            plan(&b, &p, &goals).map_err(|e| e.to_string()),
            got,
            "the plan depends on the order of the input"
        );
        got
    }
}

const ARGS: &[&str] = &[
    "brokers", "assign", "sizes", "offline", "drain", "rf", "balance",
];

fn show_plan(args: &Args) -> String {
    let plan = match args.plan() {
        Ok(plan) => plan,
        Err(e) => return format!("error: {e}\n"),
    };
    let list = |v: &[BrokerId]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut out = String::new();
    if plan.is_empty() {
        out.push_str("no changes\n");
    }
    for c in &plan.changes {
        writeln!(
            out,
            "{}/{} {} -> {} +{}",
            c.topic,
            c.partition,
            list(&c.current),
            list(&c.target),
            c.bytes_to_move
        )
        .unwrap();
    }
    out.push_str(&plan.measures_table());
    out
}

fn show_json(args: &Args) -> String {
    match args.plan() {
        Ok(plan) => plan.reassignment_json() + "\n",
        Err(e) => format!("error: {e}\n"),
    }
}

fn run(command: &str) -> String {
    let words: Vec<&str> = command.split_whitespace().collect();
    match words.split_first() {
        Some((&"plan", rest)) => show_plan(&Args::parse(rest, ARGS)),
        Some((&"json", rest)) => show_json(&Args::parse(rest, ARGS)),
        _ => panic!("unknown command {command:?}"),
    }
}

/// Runs every case of one file; returns the file as it should be and the mismatches found.
fn run_file(path: &Path) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut blessed = String::new();
    let mut mismatches = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.is_empty() || line.starts_with('#') {
            blessed.push_str(line);
            blessed.push('\n');
            i += 1;
            continue;
        }
        let command_line = i + 1;
        assert_eq!(
            lines.get(i + 1).copied(),
            Some(SEPARATOR),
            "{}:{command_line}: a command must be followed by {SEPARATOR}",
            path.display()
        );
        i += 2;
        let mut expected = String::new();
        while i < lines.len() && !lines[i].is_empty() {
            // Blessing would silently swallow a case written without its blank line.
            assert!(
                !lines[i].starts_with("plan ") && !lines[i].starts_with("json "),
                "{}:{}: a command inside an expected output (a blank line is missing)",
                path.display(),
                i + 1
            );
            expected.push_str(lines[i]);
            expected.push('\n');
            i += 1;
        }
        let actual = run(line);
        if actual != expected {
            mismatches.push(format!(
                "{}:{command_line}: {line}\n--- expected\n{expected}--- actual\n{actual}",
                path.display()
            ));
        }
        writeln!(blessed, "{line}\n{SEPARATOR}").unwrap();
        blessed.push_str(&actual);
    }
    (blessed, mismatches)
}

#[test]
fn rebalance_golden_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/rebalance");
    let bless = std::env::var("STROM_BLESS").is_ok_and(|v| v == "1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no golden files in {}", dir.display());
    let mut mismatches = Vec::new();
    for path in &files {
        let (blessed, found) = run_file(path);
        if bless {
            std::fs::write(path, blessed).unwrap();
        } else {
            mismatches.extend(found);
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} golden case(s) differ (rerun with STROM_BLESS=1 to accept the new output):\n\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
