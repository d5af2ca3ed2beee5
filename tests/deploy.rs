//! deploy/ and the Dockerfile, checked without Docker or a cluster (neither runs on the
//! development machine): promtool validates the Prometheus configuration and rules and runs
//! the alert unit tests; the compose and Kubernetes files must parse and agree with each
//! other and with the binary (image, ports, configuration file and its mount path, state
//! directory), and every metric the alerts and the dashboard use must be documented in the
//! README's Operations section.

#[path = "support/metric_names.rs"]
mod metric_names;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;
use wabill::billing::RateCard;
use wabill::config::Config;

const IMAGE_REPO: &str = "ghcr.io/wabill/wabill";
const RUNBOOK_BASE: &str = "https://github.com/wabill/wabill/blob/main/README.md#";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn yaml(rel: &str) -> Value {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: not valid YAML: {e}"))
}

fn json(rel: &str) -> serde_json::Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: not valid JSON: {e}"))
}

fn str_at<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {v:?}"))
}

fn seq_at<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("{what}: expected a list, got {v:?}"))
}

/// Runs promtool from the repository root; fails with its output.
fn promtool(args: &[&str]) -> String {
    let out = match Command::new("promtool").args(args).current_dir(root()).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed: run `make deps` (installs Debian's `prometheus` package, \
             which provides promtool)"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {} failed:\n{text}", args.join(" "));
    text
}

fn port_of(addr: &str) -> u16 {
    addr.parse::<SocketAddr>()
        .unwrap_or_else(|e| panic!("{addr:?} is not host:port: {e}"))
        .port()
}

/// The deploy configuration, loaded exactly as `wabill run --config` loads it.
fn deploy_config() -> Config {
    let path = root().join("deploy/wabill.toml");
    Config::load(&path).unwrap_or_else(|e| panic!("deploy/wabill.toml does not load: {e}"))
}

fn http_port() -> u16 {
    port_of(&deploy_config().http.addr)
}

fn compose() -> Value {
    yaml("deploy/docker-compose.yml")
}

fn compose_service(name: &str) -> Value {
    let c = compose();
    let s = &c["services"][name];
    assert!(s.is_mapping(), "docker-compose.yml has no service {name}");
    s.clone()
}

/// Compose `volumes:` entries of a service as (source, target) pairs (short syntax).
fn compose_mounts(service: &Value) -> Vec<(String, String)> {
    seq_at(&service["volumes"], "service volumes")
        .iter()
        .map(|v| {
            let parts: Vec<&str> = str_at(v, "volume").split(':').collect();
            assert!(parts.len() >= 2, "volume {v:?} is not source:target[:mode]");
            (parts[0].to_string(), parts[1].to_string())
        })
        .collect()
}

fn is_bind(source: &str) -> bool {
    source.starts_with('.') || source.starts_with('/')
}

/// Compose `ports:` entries as (host, container) port pairs.
fn compose_ports(service: &Value) -> Vec<(u16, u16)> {
    seq_at(&service["ports"], "service ports")
        .iter()
        .map(|p| {
            let text = str_at(p, "port");
            let text = text.split('/').next().unwrap_or(text);
            let parts: Vec<&str> = text.rsplitn(3, ':').collect();
            assert!(parts.len() >= 2, "port {text:?} is not host:container");
            let n = |s: &str| s.parse::<u16>().unwrap_or_else(|e| panic!("port {text:?}: {e}"));
            (n(parts[1]), n(parts[0]))
        })
        .collect()
}

fn k8s(file: &str) -> Value {
    yaml(&format!("deploy/k8s/{file}"))
}

fn statefulset_container() -> Value {
    let sts = k8s("statefulset.yaml");
    let containers = seq_at(&sts["spec"]["template"]["spec"]["containers"], "containers");
    containers
        .iter()
        .find(|c| c["name"].as_str() == Some("wabill"))
        .expect("statefulset.yaml: no container named wabill")
        .clone()
}

/// The Dockerfile's instruction arguments, continuation lines joined.
fn dockerfile_instructions(name: &str) -> Vec<String> {
    let text = read("Dockerfile");
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') && current.is_empty() {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            joined.push(std::mem::take(&mut current));
        }
    }
    joined
        .iter()
        .filter_map(|l| {
            let (instr, rest) = l.split_once(char::is_whitespace)?;
            instr.eq_ignore_ascii_case(name).then(|| rest.trim().to_string())
        })
        .collect()
}

/// The last Dockerfile `CMD` (exec form).
fn dockerfile_cmd() -> Vec<String> {
    let cmds = dockerfile_instructions("CMD");
    let last = cmds.last().expect("Dockerfile has no CMD");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("Dockerfile CMD {last:?} is not the exec (JSON) form: {e}"))
}

fn flag_value(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

// ---------------------------------------------------------------------------------------
// promtool

#[test]
fn promtool_accepts_the_alert_rules() {
    promtool(&["check", "rules", "deploy/prometheus/rules.yml"]);
}

#[test]
fn promtool_unit_tests_of_the_alerts_pass() {
    promtool(&["test", "rules", "deploy/prometheus/rules.test.yml"]);
}

#[test]
fn promtool_accepts_the_prometheus_config() {
    let out = promtool(&["check", "config", "deploy/prometheus/prometheus.yml"]);
    assert!(out.contains("1 rule files found"), "rules.yml not picked up:\n{out}");
}

/// Every dashboard query is valid PromQL: promtool checks them as recording rules, with
/// Grafana's variables replaced by what Grafana substitutes.
#[test]
fn dashboard_queries_are_valid_promql() {
    let dashboard = json("deploy/grafana/wabill.json");
    let mut exprs = Vec::new();
    collect_panel_exprs(&dashboard["panels"], &mut exprs);
    assert!(exprs.len() >= 20, "only {} queries in the dashboard", exprs.len());
    let rules: Vec<serde_json::Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, (title, expr))| {
            assert!(!expr.trim().is_empty(), "panel {title:?}: empty query");
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "15s")
                .replace("$__range", "6h")
                .replace("$instance", ".*");
            assert!(!expr.contains('$'), "panel {title:?}: unknown variable in {expr}");
            serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": expr})
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.yml");
    let doc = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    // JSON is YAML: promtool reads it as is.
    std::fs::write(&file, doc.to_string()).unwrap();
    promtool(&["check", "rules", file.to_str().unwrap()]);
}

fn collect_panel_exprs(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
    for panel in panels.as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
            out.push((title.clone(), expr.to_string()));
        }
        collect_panel_exprs(&panel["panels"], out);
    }
}

// ---------------------------------------------------------------------------------------
// Alert rules, their Kubernetes copy and their runbooks

#[test]
fn prometheus_rule_groups_equal_rules_yml() {
    let rules = yaml("deploy/prometheus/rules.yml");
    let pr = k8s("prometheusrule.yaml");
    assert_eq!(pr["apiVersion"], Value::from("monitoring.coreos.com/v1"));
    assert_eq!(pr["kind"], Value::from("PrometheusRule"));
    assert!(
        pr["metadata"]["namespace"].is_null(),
        "k8s manifests are namespace-agnostic"
    );
    assert_eq!(
        pr["spec"]["groups"], rules["groups"],
        "deploy/k8s/prometheusrule.yaml spec.groups must be identical to deploy/prometheus/rules.yml groups"
    );
}

fn alerts() -> Vec<Value> {
    let rules = yaml("deploy/prometheus/rules.yml");
    seq_at(&rules["groups"], "groups")
        .iter()
        .flat_map(|g| seq_at(&g["rules"], "rules").clone())
        .collect()
}

/// The section of README.md from `## Operations` to the next level-2 heading.
fn readme_operations() -> String {
    let readme = read("README.md");
    let start = readme
        .find("\n## Operations\n")
        .expect("README.md has no `## Operations` section");
    let body = &readme[start + 1..];
    let end = body[3..].find("\n## ").map(|i| i + 3).unwrap_or(body.len());
    body[..end].to_string()
}

/// GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_has_severity_annotations_and_a_runbook_in_the_readme() {
    let ops = readme_operations();
    let anchors: BTreeSet<String> = ops
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(github_anchor)
        .collect();
    let alerts = alerts();
    let names: BTreeSet<&str> = alerts.iter().map(|a| str_at(&a["alert"], "alert")).collect();
    let expected = [
        "WabillDown",
        "WabillNotReady",
        "WabillConsumerLagGrowing",
        "WabillDeadLettersSpiking",
        "WabillNoBillingOutput",
        "WabillRestoreStuck",
        "WabillRebalanceStorm",
    ];
    assert_eq!(names, expected.into_iter().collect(), "the alert set changed");
    for a in &alerts {
        let name = str_at(&a["alert"], "alert");
        let severity = str_at(&a["labels"]["severity"], &format!("{name} severity"));
        assert!(
            ["critical", "warning"].contains(&severity),
            "{name}: severity {severity}"
        );
        for key in ["summary", "description", "runbook_url"] {
            let text = str_at(&a["annotations"][key], &format!("{name} annotation {key}"));
            assert!(!text.trim().is_empty(), "{name}: empty {key}");
        }
        let url = str_at(&a["annotations"]["runbook_url"], "runbook_url");
        let anchor = url
            .strip_prefix(RUNBOOK_BASE)
            .unwrap_or_else(|| panic!("{name}: runbook_url {url} is not under {RUNBOOK_BASE}"));
        assert_eq!(
            anchor,
            github_anchor(&format!("Runbook: {name}")),
            "{name}: runbook anchor"
        );
        assert!(
            anchors.contains(anchor),
            "{name}: README's Operations section has no `### Runbook: {name}` heading (anchor #{anchor})"
        );
        assert!(
            ops.lines().any(|l| l.starts_with(&format!("| `{name}` |"))),
            "{name}: missing from the README's alerts table"
        );
    }
}

/// The metric names of the README's Operations table (first cell of rows such as
/// "| `wabill_ready` | gauge | ...").
fn readme_metric_names() -> BTreeSet<String> {
    readme_operations()
        .lines()
        .filter_map(|l| l.strip_prefix("| `wabill_"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(name, _)| format!("wabill_{name}"))
        .collect()
}

#[test]
fn metrics_used_by_alerts_and_dashboard_are_documented() {
    let used = metric_names::referenced_metric_names(&root());
    let documented = readme_metric_names();
    assert!(documented.len() >= 20, "README metrics table not found: {documented:?}");
    // The extraction itself: histogram series map to the metric, label values are not names.
    assert!(used.contains("wabill_event_output_latency_seconds"), "{used:?}");
    assert!(used.contains("wabill_ready"), "{used:?}");
    assert!(
        used.iter()
            .all(|n| !n.ends_with("_bucket") && !n.ends_with("_count") && !n.ends_with("_sum")),
        "{used:?}"
    );
    let missing: Vec<&String> = used.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "used by deploy/prometheus/rules.yml or deploy/grafana/wabill.json but not in README's metrics table: {missing:?}"
    );
}

/// The README's metrics table lists exactly the metrics the binary registers (the
/// `"wabill_…"` names `src/ops/metrics.rs` registers; an empty family is not exported
/// until it has a series, so the source is the complete list).
#[test]
fn readme_metrics_table_lists_exactly_the_registered_metrics() {
    let src = read("src/ops/metrics.rs");
    let registered: BTreeSet<String> = src
        .match_indices("\"wabill_")
        .map(|(i, _)| {
            let name = &src[i + 1..];
            name[..name.find('"').unwrap()].to_string()
        })
        .collect();
    assert!(registered.contains("wabill_messages_charged_total"), "{registered:?}");
    let documented = readme_metric_names();
    let undocumented: Vec<&String> = registered.difference(&documented).collect();
    let unknown: Vec<&String> = documented.difference(&registered).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "registered but not in README's metrics table: {undocumented:?}; in the table but not registered: {unknown:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Configuration

#[test]
fn deploy_config_loads_and_validates() {
    let cfg = deploy_config();
    let card = RateCard::bundled_sample().unwrap();
    cfg.profiles(&card)
        .unwrap_or_else(|e| panic!("deploy/wabill.toml: {e}"));
    assert!(!cfg.waba.is_empty(), "deploy/wabill.toml: no example [[waba]]");
    assert_eq!(cfg.kafka.brokers, "kafka:9092");
    assert_eq!(cfg.schema_registry.url.as_deref(), Some("http://schema-registry:8081"));
    assert_eq!(cfg.state.dir, "/var/lib/wabill/state");
    let addr: SocketAddr = cfg.http.addr.parse().unwrap();
    assert!(
        addr.ip().is_unspecified(),
        "in a container [http] addr must listen on 0.0.0.0, not {addr}"
    );
}

#[test]
fn configmap_carries_deploy_wabill_toml() {
    let cm = k8s("configmap.yaml");
    assert_eq!(cm["kind"], Value::from("ConfigMap"));
    let text = str_at(&cm["data"]["wabill.toml"], "configmap data wabill.toml");
    assert_eq!(
        text,
        read("deploy/wabill.toml"),
        "deploy/k8s/configmap.yaml's wabill.toml must be identical to deploy/wabill.toml"
    );
    let cfg: Config = toml::from_str(text).unwrap_or_else(|e| panic!("configmap wabill.toml: {e}"));
    cfg.profiles(&RateCard::bundled_sample().unwrap()).unwrap();
}

// ---------------------------------------------------------------------------------------
// Image, ports, paths: Dockerfile, compose, Kubernetes and Prometheus agree

#[test]
fn compose_and_statefulset_run_the_same_image_tagged_with_the_crate_version() {
    let image = format!("{IMAGE_REPO}:{}", env!("CARGO_PKG_VERSION"));
    let wabill = compose_service("wabill");
    assert_eq!(str_at(&wabill["image"], "compose wabill image"), image);
    assert_eq!(str_at(&statefulset_container()["image"], "statefulset image"), image);
    // compose builds it from the repository's Dockerfile.
    let context = root()
        .join("deploy")
        .join(str_at(&wabill["build"]["context"], "build context"));
    let dockerfile = context.join(str_at(&wabill["build"]["dockerfile"], "build dockerfile"));
    assert_eq!(
        dockerfile.canonicalize().unwrap(),
        root().join("Dockerfile").canonicalize().unwrap()
    );
    assert!(
        read("Dockerfile").contains(&image),
        "the Dockerfile's header names another image"
    );
}

#[test]
fn the_http_port_is_the_same_everywhere() {
    let port = http_port();

    let exposed: Vec<u16> = dockerfile_instructions("EXPOSE")
        .iter()
        .flat_map(|e| {
            e.split_whitespace()
                .map(|p| p.trim_end_matches("/tcp").parse::<u16>().unwrap())
        })
        .collect();
    assert_eq!(exposed, vec![port], "Dockerfile EXPOSE");

    let wabill = compose_service("wabill");
    assert!(
        compose_ports(&wabill).contains(&(port, port)),
        "compose wabill ports must map {port}:{port}"
    );
    let health = serde_json::to_string(&serde_json::to_value(&wabill["healthcheck"]["test"]).unwrap()).unwrap();
    assert!(
        health.contains(&format!("/dev/tcp/127.0.0.1/{port}")) && health.contains("/healthz"),
        "compose healthcheck must probe /healthz on {port}: {health}"
    );

    let container = statefulset_container();
    let ports = seq_at(&container["ports"], "container ports");
    let metrics = ports
        .iter()
        .find(|p| p["name"].as_str() == Some("metrics"))
        .expect("statefulset: no container port named metrics");
    assert_eq!(metrics["containerPort"].as_u64(), Some(port as u64), "containerPort");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe} path");
        assert_eq!(get["port"].as_str(), Some("metrics"), "{probe} port");
    }

    let svc = k8s("service.yaml");
    assert_eq!(
        svc["spec"]["clusterIP"].as_str(),
        Some("None"),
        "the Service is headless"
    );
    let svc_port = seq_at(&svc["spec"]["ports"], "service ports")
        .iter()
        .find(|p| p["name"].as_str() == Some("metrics"))
        .expect("service: no port named metrics")
        .clone();
    assert_eq!(svc_port["port"].as_u64(), Some(port as u64), "Service port");
    let target = &svc_port["targetPort"];
    assert!(
        target.as_str() == Some("metrics") || target.as_u64() == Some(port as u64),
        "Service targetPort {target:?}"
    );

    let sm = k8s("servicemonitor.yaml");
    assert_eq!(sm["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    let endpoint = &seq_at(&sm["spec"]["endpoints"], "servicemonitor endpoints")[0];
    assert_eq!(endpoint["port"].as_str(), Some("metrics"), "ServiceMonitor port");
    assert_eq!(endpoint["path"].as_str(), Some("/metrics"), "ServiceMonitor path");

    let prom = yaml("deploy/prometheus/prometheus.yml");
    let job = seq_at(&prom["scrape_configs"], "scrape_configs")
        .iter()
        .find(|j| j["job_name"].as_str() == Some("wabill"))
        .expect("prometheus.yml: no job wabill")
        .clone();
    let targets = seq_at(&job["static_configs"][0]["targets"], "targets");
    assert_eq!(targets.len(), 1);
    assert_eq!(str_at(&targets[0], "target"), format!("wabill:{port}"), "scrape target");
    assert_eq!(job["scrape_interval"].as_str(), Some("15s"));
}

#[test]
fn the_config_file_path_is_the_same_in_image_compose_and_statefulset() {
    let cmd = dockerfile_cmd();
    assert_eq!(cmd.first().map(String::as_str), Some("run"), "Dockerfile CMD {cmd:?}");
    let path = flag_value(&cmd, "--config").expect("Dockerfile CMD has no --config");
    let entrypoint = dockerfile_instructions("ENTRYPOINT");
    assert_eq!(entrypoint, vec![r#"["wabill"]"#.to_string()], "Dockerfile ENTRYPOINT");

    // compose: deploy/wabill.toml mounted there, no command override.
    let wabill = compose_service("wabill");
    let mounts = compose_mounts(&wabill);
    assert!(
        mounts.contains(&("./wabill.toml".to_string(), path.clone())),
        "compose must mount ./wabill.toml at {path}: {mounts:?}"
    );
    assert!(wabill["command"].is_null(), "compose overrides the image's CMD");

    // Kubernetes: the ConfigMap mounted as a directory, its key giving the file name, and
    // the same --config if args override the CMD.
    let container = statefulset_container();
    let sts = k8s("statefulset.yaml");
    let cm = k8s("configmap.yaml");
    let cm_name = str_at(&cm["metadata"]["name"], "configmap name");
    let volume = seq_at(&sts["spec"]["template"]["spec"]["volumes"], "volumes")
        .iter()
        .find(|v| v["configMap"]["name"].as_str() == Some(cm_name))
        .unwrap_or_else(|| panic!("statefulset: no volume from ConfigMap {cm_name}"))
        .clone();
    let volume_name = str_at(&volume["name"], "volume name");
    let mount = seq_at(&container["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| m["name"].as_str() == Some(volume_name))
        .expect("statefulset: the config volume is not mounted")
        .clone();
    let mounted = match mount["subPath"].as_str() {
        Some(_) => str_at(&mount["mountPath"], "mountPath").to_string(),
        None => format!(
            "{}/wabill.toml",
            str_at(&mount["mountPath"], "mountPath").trim_end_matches('/')
        ),
    };
    assert_eq!(mounted, path, "k8s config mount");
    if let Some(args) = container["args"].as_sequence() {
        let args: Vec<String> = args.iter().map(|a| str_at(a, "arg").to_string()).collect();
        assert_eq!(
            args.first().map(String::as_str),
            Some("run"),
            "statefulset args {args:?}"
        );
        assert_eq!(
            flag_value(&args, "--config"),
            Some(path.clone()),
            "statefulset --config"
        );
    }
}

#[test]
fn the_state_directory_is_a_volume_everywhere() {
    let dir = deploy_config().state.dir;
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains(&format!("mkdir -p {dir}")),
        "the image does not create {dir}"
    );
    assert_eq!(
        dockerfile_instructions("USER"),
        vec!["10001:10001".to_string()],
        "Dockerfile USER"
    );

    let c = compose();
    let mounts = compose_mounts(&c["services"]["wabill"]);
    let (source, _) = mounts
        .iter()
        .find(|(_, target)| *target == dir)
        .unwrap_or_else(|| panic!("compose: nothing mounted at {dir}"));
    assert!(!is_bind(source), "compose: the state should be a named volume");
    assert!(
        c["volumes"].get(source.as_str()).is_some(),
        "compose: volume {source} not declared"
    );

    let sts = k8s("statefulset.yaml");
    let claim = &seq_at(&sts["spec"]["volumeClaimTemplates"], "volumeClaimTemplates")[0];
    let claim_name = str_at(&claim["metadata"]["name"], "claim name");
    let mount = seq_at(&statefulset_container()["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| m["name"].as_str() == Some(claim_name))
        .unwrap_or_else(|| panic!("statefulset: claim {claim_name} not mounted"))
        .clone();
    assert_eq!(str_at(&mount["mountPath"], "mountPath"), dir);
    let security = &sts["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(security["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(security["runAsUser"].as_u64(), Some(10001));
    assert_eq!(
        security["fsGroup"].as_u64(),
        Some(10001),
        "the volume must be writable by uid 10001"
    );
}

#[test]
fn compose_wires_the_services_and_mounts_existing_files() {
    let c = compose();
    let deploy = root().join("deploy");
    let services = c["services"].as_mapping().expect("compose: no services");
    for (name, service) in services {
        let name = str_at(name, "service name");
        if service["volumes"].is_null() {
            continue;
        }
        for (source, target) in compose_mounts(service) {
            if is_bind(&source) {
                let path = deploy.join(&source);
                assert!(
                    path.exists(),
                    "compose {name}: {source} (mounted at {target}) does not exist"
                );
            } else {
                assert!(
                    c["volumes"].get(source.as_str()).is_some(),
                    "compose {name}: volume {source} not declared"
                );
            }
        }
    }
    for (name, image) in [
        ("kafka", "apache/kafka:3.8.0"),
        ("schema-registry", "confluentinc/cp-schema-registry:7.7.1"),
        ("prometheus", "prom/prometheus:v2.54.1"),
        ("grafana", "grafana/grafana:11.2.0"),
    ] {
        assert_eq!(
            compose_service(name)["image"].as_str(),
            Some(image),
            "compose {name} image"
        );
    }

    // wabill's configuration points at the compose services.
    let cfg = deploy_config();
    let kafka = compose_service("kafka");
    let advertised = str_at(
        &kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"],
        "advertised listeners",
    );
    assert!(
        advertised.contains(&format!("//{}", cfg.kafka.brokers)),
        "kafka does not advertise {} to the other containers: {advertised}",
        cfg.kafka.brokers
    );
    let registry = cfg.schema_registry.url.clone().unwrap();
    let registry_port = registry.rsplit(':').next().unwrap();
    assert!(registry.starts_with("http://schema-registry:"));
    let schema_registry = compose_service("schema-registry");
    let listeners = str_at(
        &schema_registry["environment"]["SCHEMA_REGISTRY_LISTENERS"],
        "registry listeners",
    );
    assert!(listeners.ends_with(&format!(":{registry_port}")), "{listeners}");

    // Prometheus: the config and every rule file it names, side by side as in deploy/.
    let prom_mounts = compose_mounts(&compose_service("prometheus"));
    let config_target = prom_mounts
        .iter()
        .find(|(s, _)| s == "./prometheus/prometheus.yml")
        .map(|(_, t)| t.clone())
        .expect("compose prometheus: prometheus.yml not mounted");
    let config_dir = Path::new(&config_target).parent().unwrap();
    let prom = yaml("deploy/prometheus/prometheus.yml");
    for rule_file in seq_at(&prom["rule_files"], "rule_files") {
        let rule_file = str_at(rule_file, "rule file");
        let target = config_dir.join(rule_file);
        assert!(
            prom_mounts
                .iter()
                .any(|(s, t)| *s == format!("./prometheus/{rule_file}") && Path::new(t) == target),
            "compose prometheus: {rule_file} not mounted at {}",
            target.display()
        );
    }

    // Grafana: the datasource and the dashboard provider find what compose mounts.
    let graf_mounts = compose_mounts(&compose_service("grafana"));
    assert!(graf_mounts.contains(&(
        "./grafana/provisioning".to_string(),
        "/etc/grafana/provisioning".to_string()
    )));
    let providers = yaml("deploy/grafana/provisioning/dashboards/wabill.yml");
    let provider_path = str_at(&providers["providers"][0]["options"]["path"], "provider path");
    let (_, dashboard_target) = graf_mounts
        .iter()
        .find(|(s, _)| s == "./grafana/wabill.json")
        .expect("compose grafana: wabill.json not mounted");
    assert_eq!(Path::new(dashboard_target).parent().unwrap(), Path::new(provider_path));
    let datasources = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let ds = &datasources["datasources"][0];
    assert_eq!(ds["type"].as_str(), Some("prometheus"));
    let prom_port = compose_ports(&compose_service("prometheus"))[0].1;
    assert_eq!(
        ds["url"].as_str(),
        Some(format!("http://prometheus:{prom_port}").as_str())
    );
    let dashboard = json("deploy/grafana/wabill.json");
    assert_eq!(dashboard["uid"], "wabill");
    let vars = dashboard["templating"]["list"].as_array().unwrap();
    let ds_var = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("dashboard: no datasource variable");
    assert_eq!(ds_var["type"], "datasource");
    assert_eq!(ds_var["query"], "prometheus");
    assert_eq!(
        ds_var["current"]["value"].as_str(),
        ds["uid"].as_str(),
        "default datasource uid"
    );
}

#[test]
fn kubernetes_manifests_fit_together() {
    let dir = root().join("deploy/k8s");
    let kustomization = k8s("kustomization.yaml");
    let listed: BTreeSet<String> = seq_at(&kustomization["resources"], "resources")
        .iter()
        .map(|r| str_at(r, "resource").to_string())
        .collect();
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present, "kustomization.yaml resources vs deploy/k8s/*.yaml");
    for file in &present {
        let doc = k8s(file);
        assert!(
            doc["metadata"]["namespace"].is_null(),
            "{file}: manifests are namespace-agnostic"
        );
    }

    let sts = k8s("statefulset.yaml");
    let spec = &sts["spec"];
    assert_eq!(spec["replicas"].as_u64(), Some(3));
    assert_eq!(spec["podManagementPolicy"].as_str(), Some("Parallel"));
    let partitions = deploy_config().kafka.partitions as u64;
    assert!(
        partitions >= spec["replicas"].as_u64().unwrap(),
        "[kafka] partitions ({partitions}) must be >= replicas"
    );
    let grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(grace >= 60, "terminationGracePeriodSeconds {grace}");
    assert_eq!(
        compose_service("wabill")["stop_grace_period"].as_str(),
        Some(format!("{grace}s").as_str()),
        "compose stop_grace_period = k8s terminationGracePeriodSeconds"
    );

    let selector = &spec["selector"]["matchLabels"];
    let pod_labels = spec["template"]["metadata"]["labels"].as_mapping().unwrap();
    for (k, v) in selector.as_mapping().unwrap() {
        assert_eq!(pod_labels.get(k), Some(v), "pod template lacks selector label {k:?}");
    }
    let svc = k8s("service.yaml");
    assert_eq!(
        spec["serviceName"].as_str(),
        svc["metadata"]["name"].as_str(),
        "serviceName"
    );
    assert_eq!(&svc["spec"]["selector"], selector, "Service selector");
    let pdb = k8s("pdb.yaml");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], selector, "PDB selector");
    assert_eq!(pdb["spec"]["maxUnavailable"].as_u64(), Some(1));
    // The ServiceMonitor selects the Service, whose name becomes the job label the alerts
    // and the dashboard query.
    let sm = k8s("servicemonitor.yaml");
    let svc_labels = svc["metadata"]["labels"].as_mapping().unwrap();
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
        assert_eq!(svc_labels.get(k), Some(v), "Service lacks ServiceMonitor label {k:?}");
    }
    assert_eq!(svc["metadata"]["name"].as_str(), Some("wabill"), "job label");

    let container = statefulset_container();
    let env = seq_at(&container["env"], "env");
    let brokers = env
        .iter()
        .find(|e| e["name"].as_str() == Some("WABILL_KAFKA_BROKERS"))
        .expect("statefulset: no WABILL_KAFKA_BROKERS");
    assert!(brokers["value"].as_str().is_some_and(|v| !v.is_empty()));
    assert!(
        container["resources"]["requests"]["memory"].as_str().is_some()
            && container["resources"]["requests"]["cpu"].as_str().is_some(),
        "resource requests"
    );
}
