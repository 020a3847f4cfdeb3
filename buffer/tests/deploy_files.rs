//! The files under deploy/ hold what they claim: the systemd unit passes systemd's own check and
//! has descriptors for the connection limits, the production config loads with barrage's own
//! loader, and the Grafana dashboard and the alert rules name only metrics a running barrage
//! exports (or node_exporter's, named here).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use barrage::config::Config;
use support::Barrage;

fn deploy_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name)
}

fn read_deploy_file(name: &str) -> String {
    std::fs::read_to_string(deploy_file(name)).unwrap_or_else(|e| panic!("deploy/{name}: {e}"))
}

/// The value of `Key=` in the unit (the last one, as systemd reads it).
fn unit_setting(unit: &str, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .next_back()
        .map(|v| v.trim().to_string())
}

fn has_program(name: &str) -> bool {
    Command::new(name).arg("--version").output().is_ok()
}

/// `systemd-analyze verify` on `unit` (with ExecStart pointed at the barrage just built, which
/// verify requires to exist): the diagnostics about the unit, empty when it is clean. verify
/// exits 0 on an unknown key or a bad value, so its messages are what tells.
fn systemd_verify(unit: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("barrage.service");
    let unit = unit.replace("/usr/local/bin/barrage", env!("CARGO_BIN_EXE_barrage"));
    std::fs::write(&path, unit).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut problems: Vec<String> = stderr
        .lines()
        .filter(|line| line.contains("barrage.service"))
        .map(str::to_string)
        .collect();
    if !output.status.success() {
        problems.push(format!(
            "systemd-analyze verify: {}: {stderr}",
            output.status
        ));
    }
    problems
}

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    if !has_program("systemd-analyze") {
        println!("note: systemd-analyze is not installed; deploy/barrage.service was not verified");
        return;
    }
    let problems = systemd_verify(&read_deploy_file("barrage.service"));
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_systemd_check_rejects_a_broken_unit() {
    if !has_program("systemd-analyze") {
        println!("note: systemd-analyze is not installed; nothing to check");
        return;
    }
    let unit = read_deploy_file("barrage.service");
    for (good, broken) in [
        ("WatchdogSec=", "WatchdgSec="),
        ("Type=notify", "Type=notfy"),
        ("@system-service", "@system-servce"),
    ] {
        let problems = systemd_verify(&unit.replace(good, broken));
        assert!(!problems.is_empty(), "{broken} was not reported");
    }
}

#[test]
fn unit_asks_for_readiness_and_the_watchdog() {
    let unit = read_deploy_file("barrage.service");
    assert_eq!(unit_setting(&unit, "Type").as_deref(), Some("notify"));
    assert_eq!(unit_setting(&unit, "NotifyAccess").as_deref(), Some("main"));
    assert!(unit_setting(&unit, "WatchdogSec").is_some());
    // SIGHUP rereads the certificates (tests/starttls.rs); it must go to barrage itself.
    assert_eq!(
        unit_setting(&unit, "ExecReload").as_deref(),
        Some("/bin/kill -HUP $MAINPID")
    );
}

/// Descriptors the unit grants, against the connections `config` allows plus a margin for the
/// listeners, the journal's files, the ack relay and the runtime.
fn assert_descriptors_cover(config: &Config, what: &str) {
    let unit = read_deploy_file("barrage.service");
    let granted: usize = unit_setting(&unit, "LimitNOFILE")
        .expect("the unit sets LimitNOFILE")
        .parse()
        .expect("LimitNOFILE is a number");
    let connections = config.smtp.max_connections
        + if config.web.enabled {
            config.web.max_connections
        } else {
            0
        };
    assert!(
        granted >= connections + 1024,
        "LimitNOFILE={granted} is too small for {what}: {connections} connections + 1024"
    );
}

#[test]
fn unit_descriptors_cover_the_default_connection_limits() {
    assert_descriptors_cover(&Config::default(), "the defaults");
}

#[test]
fn production_config_loads_with_barrages_loader() {
    let config = Config::load(&deploy_file("barrage.toml")).expect("deploy/barrage.toml loads");
    config.validate().expect("deploy/barrage.toml is valid");
    assert_descriptors_cover(&config, "deploy/barrage.toml");
    let unit = read_deploy_file("barrage.service");
    let state = unit_setting(&unit, "StateDirectory").expect("the unit has a StateDirectory");
    assert_eq!(config.data_dir, Path::new("/var/lib").join(&state));
    assert_eq!(
        unit_setting(&unit, "ReadWritePaths").map(PathBuf::from),
        Some(config.data_dir.clone())
    );
    let ack = config.ack.as_ref().expect("production sends acks");
    let relay_port: u16 = ack.relay.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(
        relay_port,
        config.smtp.listen.port(),
        "the ack relay would be barrage's own SMTP intake"
    );
    // The binary's own path through the config and the ack template.
    let preview = Command::new(env!("CARGO_BIN_EXE_barrage"))
        .args(["ack", "preview", "--config"])
        .arg(deploy_file("barrage.toml"))
        .output()
        .unwrap();
    assert!(
        preview.status.success(),
        "{}",
        String::from_utf8_lossy(&preview.stderr)
    );
}

/// Metrics that are not barrage's but that the dashboard and the alerts may use.
const OTHER_METRICS: &[&str] = &[
    "up",
    "node_filesystem_avail_bytes",
    "node_filesystem_size_bytes",
    "node_netstat_Tcp_CurrEstab",
];

const PROMQL_WORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression reads: identifiers outside `{…}` and `[…]` that are not
/// functions (followed by `(`), keywords, or Grafana variables (`$…`).
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let (mut names, mut depth, mut i) = (Vec::new(), 0i32, 0);
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '{' | '[') {
            depth += 1;
        } else if matches!(c, '}' | ']') {
            depth -= 1;
        }
        let starts_word = c.is_ascii_alphabetic() || c == '_' || c == ':';
        let after_value = i > 0 && (chars[i - 1].is_ascii_alphanumeric() || chars[i - 1] == '$');
        if depth > 0 || !starts_word || after_value {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':'))
        {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let next = chars[i..].iter().find(|c| !c.is_whitespace());
        if next != Some(&'(') && !PROMQL_WORDS.contains(&word.as_str()) {
            names.push(word);
        }
    }
    names
}

/// Every metric an expression names that neither barrage exports nor `OTHER_METRICS` lists.
fn unknown_metrics(expr: &str, exported: &BTreeSet<String>) -> Vec<String> {
    metric_names(expr)
        .into_iter()
        .filter(|name| !exported.contains(name) && !OTHER_METRICS.contains(&name.as_str()))
        .collect()
}

fn dashboard_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => dashboard_exprs(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

fn alert_exprs(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("expr:"))
        .map(|expr| expr.trim().to_string())
        .collect()
}

/// The metric names a started barrage serves on `/metrics` (from its `# TYPE` lines).
async fn scraped_metric_names() -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("barrage.toml");
    // With an [ack] section, so the ack metrics are there too (the relay need not answer).
    std::fs::write(
        &config,
        "[ack]\nrelay = \"127.0.0.1:9\"\nfrom = \"registry@example.fr\"\n",
    )
    .unwrap();
    let barrage = Barrage::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let url = format!("http://{}/metrics", barrage.http);
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let names: BTreeSet<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(names.contains("barrage_acks_pending"), "{text}");
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_name_only_exported_metrics() {
    let exported = scraped_metric_names().await;
    let dashboard: serde_json::Value =
        serde_json::from_str(&read_deploy_file("grafana-dashboard.json"))
            .expect("deploy/grafana-dashboard.json is JSON");
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    let alerts = alert_exprs(&read_deploy_file("alerts.yml"));
    assert!(
        exprs.len() >= 10 && alerts.len() >= 5,
        "{exprs:?} {alerts:?}"
    );
    let mut used = BTreeSet::new();
    for expr in exprs.iter().chain(&alerts) {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{expr:?} reads no metric");
        let unknown = unknown_metrics(expr, &exported);
        assert!(
            unknown.is_empty(),
            "{expr:?} names {unknown:?}, not exported"
        );
        used.extend(names);
    }
    for needed in [
        "barrage_accepted_seq",
        "barrage_queue_depth",
        "barrage_cursor",
        "barrage_commits_total",
        "barrage_committed_requests_total",
        "barrage_refused_unavailable_total",
        "barrage_refused_malformed_total",
        "barrage_acks_pending",
    ] {
        assert!(used.contains(needed), "nothing shows {needed}");
    }
}

#[test]
fn the_metric_check_catches_a_misspelt_or_invented_metric() {
    let exported: BTreeSet<String> = ["barrage_accepted_seq", "barrage_cursor"]
        .map(String::from)
        .into();
    let ok = r#"rate(barrage_accepted_seq{job="$job"}[$__rate_interval]) - barrage_cursor"#;
    assert_eq!(unknown_metrics(ok, &exported), Vec::<String>::new());
    assert_eq!(
        unknown_metrics("rate(barrage_acepted_seq[5m]) > 0 and up", &exported),
        ["barrage_acepted_seq"]
    );
    assert_eq!(
        unknown_metrics("barrage_connections / 1e-9", &exported),
        ["barrage_connections"]
    );
}

/// `promtool check rules FILE`: empty when it passes, its complaint otherwise.
fn promtool_check(rules: &Path) -> String {
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(rules)
        .output()
        .unwrap();
    if output.status.success() {
        return String::new();
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    format!("{stdout}{}", String::from_utf8_lossy(&output.stderr))
}

/// The dashboard's queries as recording rules, Grafana's variables given values, so that
/// promtool parses each one as PromQL.
fn dashboard_as_rules(exprs: &[String]) -> String {
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1h")
            .replace("$job", "barrage")
            .replace("$node", ".*");
        // A JSON string is a valid YAML double-quoted scalar.
        let quoted = serde_json::to_string(&expr).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {quoted}\n"
        ));
    }
    rules
}

#[test]
fn alerts_and_dashboard_queries_pass_promtool_where_it_is_installed() {
    if !has_program("promtool") {
        println!(
            "note: promtool is not installed; deploy/alerts.yml and the dashboard's PromQL were not checked by it"
        );
        return;
    }
    let problems = promtool_check(&deploy_file("alerts.yml"));
    assert!(problems.is_empty(), "deploy/alerts.yml: {problems}");
    let dashboard: serde_json::Value =
        serde_json::from_str(&read_deploy_file("grafana-dashboard.json")).unwrap();
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    let dir = tempfile::tempdir().unwrap();
    let check = |exprs: &[String]| {
        let path = dir.path().join("dashboard-rules.yml");
        std::fs::write(&path, dashboard_as_rules(exprs)).unwrap();
        promtool_check(&path)
    };
    let problems = check(&exprs);
    assert!(problems.is_empty(), "the dashboard's queries: {problems}");
    // The same check refuses a query that is not PromQL.
    exprs.push("rate(barrage_cursor[1m]".into());
    assert!(
        !check(&exprs).is_empty(),
        "promtool took an unbalanced query"
    );
}
