//! The bundled sample traffic (`data/sample/*.jsonl`) is exactly what `make sample-data`
//! generates with this build, and `make run` replays every file of it. This pins the
//! generator's output: traffic before 2025-07-01 keeps its bytes when the generator learns
//! later eras, and a change to the generator or the Makefile that changes a sample file
//! must ship the regenerated file.

use std::path::Path;
use std::process::Command;

/// Makefile variable → bundled file.
const FILES: [(&str, &str); 3] = [
    ("SAMPLE", "data/sample/webhooks-2022-03.jsonl"),
    ("SAMPLE_ERAS", "data/sample/webhooks-2023-2024.jsonl"),
    ("SAMPLE_PMP", "data/sample/webhooks-2025-2026.jsonl"),
];

/// The commands `make` would run for `target` (prerequisites not remade), with `vars`.
fn make_dry_run(target: &str, vars: &[String]) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("make")
        .current_dir(root)
        .args(["--no-print-directory", "-n", "-o", "build", "-o", "deps"])
        .args(vars)
        .arg(target)
        .output()
        .expect("make is needed (the project is built with it)");
    assert!(
        out.status.success(),
        "make -n {target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn make_sample_data_reproduces_the_bundled_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let mut vars = vec![format!("BIN={}", env!("CARGO_BIN_EXE_wabill"))];
    for (var, file) in FILES {
        let name = Path::new(file).file_name().unwrap();
        vars.push(format!("{var}={}", dir.path().join(name).display()));
    }
    let script = make_dry_run("sample-data", &vars);
    for v in &vars[1..] {
        let (var, path) = v.split_once('=').unwrap();
        assert!(script.contains(path), "sample-data does not write ${var}:\n{script}");
    }
    let status = Command::new("sh")
        .current_dir(root)
        .arg("-ec")
        .arg(&script)
        .status()
        .unwrap();
    assert!(status.success(), "{script}");
    for (_, file) in FILES {
        let want = std::fs::read_to_string(root.join(file)).unwrap();
        let got = std::fs::read_to_string(dir.path().join(Path::new(file).file_name().unwrap())).unwrap();
        if got != want {
            let (g, w): (Vec<&str>, Vec<&str>) = (got.lines().collect(), want.lines().collect());
            let i = (0..g.len().max(w.len())).find(|&i| g.get(i) != w.get(i)).unwrap_or(0);
            panic!(
                "{file} is not what `make sample-data` generates ({} lines generated, {} bundled); first difference at line {}:\n got: {:?}\nwant: {:?}",
                g.len(),
                w.len(),
                i + 1,
                g.get(i),
                w.get(i)
            );
        }
    }
}

#[test]
fn make_run_replays_every_sample_file_with_the_sample_config() {
    let script = make_dry_run("run", &["BIN=wabill".to_string()]);
    for (_, file) in FILES {
        assert!(
            script.contains(&format!("--input {file}")),
            "make run does not replay {file}:\n{script}"
        );
    }
    assert!(script.contains("--config data/sample/wabill.toml"), "{script}");
    assert!(script.contains("--summary"), "{script}");
}
