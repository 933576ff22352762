//! Rules for migration files (migrations/README.md): from 0007 on, indexes are built concurrently, outside
//! a transaction, so adding one never blocks writes on a live table.

use std::path::Path;

/// Migrations before this one ran when the tables were small or new.
const FIRST_CHECKED: u32 = 7;

/// Why `sql` breaks the rule, if it does.
fn index_rule_violation(sql: &str) -> Option<String> {
    let lower = sql.to_ascii_lowercase();
    let creates_index = lower.contains("create index") || lower.contains("create unique index");
    if !creates_index {
        return None;
    }
    let plain = lower
        .match_indices("index")
        .filter(|(i, _)| {
            lower[..*i].trim_end().ends_with("create") || lower[..*i].trim_end().ends_with("unique")
        })
        .any(|(i, _)| {
            !lower[i + "index".len()..]
                .trim_start()
                .starts_with("concurrently")
        });
    if plain {
        return Some("CREATE INDEX without CONCURRENTLY".into());
    }
    if !lower.starts_with("-- no-transaction") {
        return Some(
            "CREATE INDEX CONCURRENTLY needs `-- no-transaction` as the first line".into(),
        );
    }
    None
}

#[test]
fn the_index_rule_tells_good_from_bad() {
    assert!(index_rule_violation("CREATE INDEX a ON t (x);").is_some());
    assert!(index_rule_violation("create unique index a on t (x);").is_some());
    assert!(index_rule_violation("CREATE INDEX CONCURRENTLY a ON t (x);").is_some());
    assert!(
        index_rule_violation("-- no-transaction\nCREATE INDEX CONCURRENTLY a ON t (x);").is_none()
    );
    assert!(index_rule_violation("ALTER TABLE t ADD COLUMN c int;").is_none());
}

#[test]
fn migrations_build_indexes_concurrently() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let Some(version) = name.split('_').next().and_then(|v| v.parse::<u32>().ok()) else {
            continue;
        };
        checked += 1;
        if version < FIRST_CHECKED {
            continue;
        }
        let sql = std::fs::read_to_string(&path).unwrap();
        if let Some(why) = index_rule_violation(&sql) {
            panic!("{name}: {why} (see migrations/README.md)");
        }
    }
    assert!(checked >= 6, "no migrations found in {}", dir.display());
}
