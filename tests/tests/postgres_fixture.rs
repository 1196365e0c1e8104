//! The PostgreSQL fixture itself: a cluster of its own, as `nobody`, that keeps what it
//! committed through a kill -9.

use gridedge_tests::postgres::Postgres;

#[test]
fn a_throwaway_cluster_runs_unprivileged_and_keeps_its_commits_through_a_kill_9() {
    let mut pg = Postgres::start().unwrap();
    assert_eq!(pg.psql("SELECT current_user").unwrap(), "postgres");
    let server_user = pg
        .psql("SELECT pg_read_file('/proc/self/status')")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(str::to_owned));
    // nobody is 65534 on Debian: never root.
    assert!(
        server_user.as_deref().is_some_and(|l| l.contains("65534")),
        "{server_user:?}"
    );
    pg.psql("CREATE TABLE t (n int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 200)")
        .unwrap();
    pg.kill();
    assert!(pg.psql("SELECT 1").is_err(), "killed");
    pg.start_again().unwrap();
    assert_eq!(pg.psql("SELECT count(*) FROM t").unwrap(), "200");
}
