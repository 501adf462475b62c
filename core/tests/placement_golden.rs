//! Golden tests of replica placement, data-driven in the manner of raft-rs's `testdata/`:
//! each file in `core/testdata/placement/` lists cases, each a command line, a `----` line
//! and the expected output up to a blank line; `#` lines are comments. The test compares
//! the current output with the files, or rewrites the outputs when `STROM_BLESS=1` is set
//! (review the diff before committing it: a changed golden file is a changed placement).
//!
//! Commands:
//! - `place racks=a:1,2/b:3 rf=2 partitions=6 [start=0] [first=0]` (or `brokers=1,2,3` for
//!   brokers without a rack; `-` names the rack-less group inside `racks=`): prints the
//!   interleaved order, each partition's replicas (leader first, then the replicas' racks),
//!   and per broker the leaders and followers it received.
//! - `check brokers=1,2,3 assign=1,2/3,1 [rf=2]`: `ok` or the error's message.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use strom_core::placement::{
    assign_replicas, check_assignment, check_assignment_with_replication_factor, rack_interleaved,
};
use strom_core::{BrokerId, BrokerInfo};

const SEPARATOR: &str = "----";

fn ids(list: &str) -> Vec<BrokerId> {
    if list.is_empty() {
        return Vec::new();
    }
    list.split(',')
        .map(|s| s.parse().unwrap_or_else(|_| panic!("bad broker id {s:?}")))
        .collect()
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

    fn num<T: std::str::FromStr>(&self, key: &str, default: Option<T>) -> T {
        match self.get(key) {
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| panic!("{key}={v} is not a number")),
            None => default.unwrap_or_else(|| panic!("missing {key}=")),
        }
    }

    fn brokers(&self) -> Vec<BrokerInfo> {
        match (self.get("brokers"), self.get("racks")) {
            (Some(list), None) => ids(list)
                .into_iter()
                .map(|id| BrokerInfo { id, rack: None })
                .collect(),
            (None, Some(racks)) => racks
                .split('/')
                .flat_map(|group| {
                    let (rack, list) = group
                        .split_once(':')
                        .unwrap_or_else(|| panic!("rack group {group:?} is not rack:ids"));
                    let rack = (rack != "-").then(|| rack.to_owned());
                    ids(list).into_iter().map(move |id| BrokerInfo {
                        id,
                        rack: rack.clone(),
                    })
                })
                .collect(),
            _ => panic!("give exactly one of brokers= and racks="),
        }
    }
}

fn place(args: &Args) -> String {
    let brokers = args.brokers();
    let rf = args.num("rf", None);
    let partitions = args.num("partitions", None);
    let start = args.num("start", Some(0));
    let first = args.num("first", Some(0));
    let got = match assign_replicas(&brokers, first, partitions, rf, start) {
        Ok(got) => got,
        Err(e) => return format!("error: {e}\n"),
    };
    // The outcome must depend on the set of brokers only, not on their order.
    let mut reversed = brokers.clone();
    reversed.reverse();
    assert_eq!(
        assign_replicas(&reversed, first, partitions, rf, start).as_ref(),
        Ok(&got),
        "placement depends on the order of the brokers"
    );
    let rack_of: BTreeMap<BrokerId, Option<&str>> =
        brokers.iter().map(|b| (b.id, b.rack.as_deref())).collect();
    let show_racks = rack_of.values().any(Option::is_some);
    let mut leaders: BTreeMap<BrokerId, usize> = rack_of.keys().map(|&b| (b, 0)).collect();
    let mut followers = leaders.clone();
    let mut out = String::new();
    let order: Vec<String> = rack_interleaved(&brokers)
        .iter()
        .map(ToString::to_string)
        .collect();
    writeln!(out, "order {}", order.join(" ")).unwrap();
    for (i, replicas) in got.iter().enumerate() {
        *leaders.get_mut(&replicas[0]).unwrap() += 1;
        for b in &replicas[1..] {
            *followers.get_mut(b).unwrap() += 1;
        }
        let list: Vec<String> = replicas.iter().map(ToString::to_string).collect();
        write!(out, "p{} {}", first as usize + i, list.join(" ")).unwrap();
        if show_racks {
            let racks: Vec<&str> = replicas.iter().map(|b| rack_of[b].unwrap_or("-")).collect();
            write!(out, " | {}", racks.join(" ")).unwrap();
        }
        out.push('\n');
    }
    let counts = |m: &BTreeMap<BrokerId, usize>| {
        m.iter()
            .map(|(b, c)| format!("{b}={c}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    writeln!(out, "leaders {}", counts(&leaders)).unwrap();
    writeln!(out, "followers {}", counts(&followers)).unwrap();
    out
}

fn check(args: &Args) -> String {
    let brokers = args.brokers();
    let assign: Vec<Vec<BrokerId>> = match args.get("assign") {
        None | Some("") => Vec::new(),
        Some(a) => a.split('/').map(ids).collect(),
    };
    let result = match args.get("rf") {
        Some(_) => {
            check_assignment_with_replication_factor(&brokers, &assign, args.num("rf", None))
        }
        None => check_assignment(&brokers, &assign),
    };
    match result {
        Ok(()) => "ok\n".to_owned(),
        Err(e) => format!("error: {e}\n"),
    }
}

fn run(command: &str) -> String {
    let words: Vec<&str> = command.split_whitespace().collect();
    match words.split_first() {
        Some((&"place", rest)) => place(&Args::parse(
            rest,
            &["brokers", "racks", "rf", "partitions", "start", "first"],
        )),
        Some((&"check", rest)) => check(&Args::parse(rest, &["brokers", "racks", "assign", "rf"])),
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
fn placement_golden_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/placement");
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
