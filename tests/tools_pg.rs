//! tools/pg.sh: the embedded PostgreSQL that `make run` starts is durable; only `make test` turns
//! fsync off.

use std::process::Command;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `SHOW fsync` on a fresh private cluster started by pg.sh with `extra_env`.
fn fsync_setting(extra_env: &[(&str, &str)]) -> String {
    let data = tempfile::tempdir().unwrap();
    // As root, pg.sh hands the cluster to the postgres user, who must reach it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_port().to_string();
    let mut cmd = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/pg.sh"));
    cmd.arg(data.path().join("pg"))
        .arg(&port)
        .args([
            "--",
            "sh",
            "-c",
            r#"psql "$DATABASE_URL" -tAc 'SHOW fsync'"#,
        ])
        .env_remove("DATABASE_URL")
        .env_remove("PG_FSYNC");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "pg.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn make_run_database_is_durable() {
    assert_eq!(fsync_setting(&[]), "on");
    assert_eq!(fsync_setting(&[("PG_FSYNC", "off")]), "off");
}
