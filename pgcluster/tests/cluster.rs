//! A real cluster: started, queried through its URL's port, killed, restarted with its data,
//! and a synchronous standby promoted after its primary is killed.

use pgcluster::Cluster;

#[test]
fn start_query_kill_restart_keeps_committed_rows() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path()).unwrap();
    assert!(
        cluster
            .url("t")
            .starts_with("postgres://postgres@127.0.0.1:")
    );
    cluster.create_database("t").unwrap();
    cluster
        .psql("t", "CREATE TABLE r (n int); INSERT INTO r VALUES (1), (2)")
        .unwrap();
    assert_eq!(cluster.psql("t", "SELECT sum(n) FROM r").unwrap(), "3");
    assert_eq!(cluster.psql("t", "SHOW synchronous_commit").unwrap(), "on");
    assert_eq!(cluster.psql("t", "SHOW fsync").unwrap(), "on");

    let pid = cluster.pid().unwrap();
    cluster.kill().unwrap();
    assert!(cluster.pid().is_none());
    assert!(
        cluster.psql("t", "SELECT 1").is_err(),
        "a killed cluster answers nothing"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the postmaster was reaped"
    );

    cluster.restart().unwrap();
    assert_eq!(cluster.psql("t", "SELECT sum(n) FROM r").unwrap(), "3");
    cluster.restart().unwrap();
    assert_eq!(cluster.psql("t", "SELECT count(*) FROM r").unwrap(), "2");
}

#[test]
fn a_promoted_synchronous_standby_has_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Cluster::start(&dir.path().join("primary")).unwrap();
    let standby = primary.start_standby(&dir.path().join("standby")).unwrap();
    let sync = primary
        .psql(
            "postgres",
            "SELECT application_name, sync_state FROM pg_stat_replication",
        )
        .unwrap();
    assert_eq!(sync, format!("{}|sync", standby.name()));
    primary.create_database("t").unwrap();
    primary
        .psql(
            "t",
            "CREATE TABLE r (n int); INSERT INTO r SELECT generate_series(1, 100)",
        )
        .unwrap();
    primary.kill().unwrap();
    standby.promote().unwrap();
    assert_eq!(standby.psql("t", "SELECT count(*) FROM r").unwrap(), "100");
    standby.psql("t", "INSERT INTO r VALUES (101)").unwrap();
}
