//! Golden files: realistic payload files with reviewed expected outputs, run through the
//! real `wabill replay` binary. Each case directory holds `input.jsonl`, `config.toml`,
//! `expected.jsonl` (byte-exact) and `expected-dead-letters.json` ([line, reason substring]
//! pairs). The expected files are written from the rules by the case's `make.py`, not
//! copied from a run.

use std::path::Path;
use std::process::Command;

fn run_case(dir: &Path) {
    let out_dir = tempfile::tempdir().unwrap();
    let output = out_dir.path().join("out.jsonl");
    let dead = out_dir.path().join("dead.jsonl");
    let status = Command::new(env!("CARGO_BIN_EXE_wabill"))
        .args(["replay", "--quiet", "--input"])
        .arg(dir.join("input.jsonl"))
        .arg("--config")
        .arg(dir.join("config.toml"))
        .arg("--output")
        .arg(&output)
        .arg("--dead-letter")
        .arg(&dead)
        .status()
        .unwrap();
    assert!(status.success(), "{}: exit {status}", dir.display());
    let got = std::fs::read_to_string(&output).unwrap();
    let want = std::fs::read_to_string(dir.join("expected.jsonl")).unwrap();
    if got != want {
        let got_lines: Vec<&str> = got.lines().collect();
        let want_lines: Vec<&str> = want.lines().collect();
        for i in 0..got_lines.len().max(want_lines.len()) {
            let (g, w) = (got_lines.get(i), want_lines.get(i));
            if g != w {
                panic!(
                    "{}: first difference at record {}\n got: {:?}\nwant: {:?}",
                    dir.display(),
                    i + 1,
                    g,
                    w
                );
            }
        }
    }
    let dead_text = std::fs::read_to_string(&dead).unwrap();
    let dead: Vec<serde_json::Value> = dead_text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let want_dead: Vec<(u64, String)> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected-dead-letters.json")).unwrap()).unwrap();
    assert_eq!(
        dead.len(),
        want_dead.len(),
        "{}: dead letters {dead_text}",
        dir.display()
    );
    for (d, (line, reason)) in dead.iter().zip(&want_dead) {
        assert_eq!(d["line"].as_u64(), Some(*line), "{d}");
        assert!(
            d["reason"].as_str().unwrap().contains(reason.as_str()),
            "{d} should mention {reason:?}"
        );
        assert!(!d["original"].as_str().unwrap().is_empty());
    }
}

#[test]
fn golden_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut n = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        if dir.join("input.jsonl").exists() {
            run_case(&dir);
            n += 1;
        }
    }
    assert!(n >= 1, "no golden cases found");
}
